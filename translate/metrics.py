"""Image-translation metrics on tensors: realism, faithfulness, retrieval, path straightness,
and a small pixel domain classifier.

Images are ``(batch, 3, H, W)`` floats in ``[-1, 1]`` (the codec's range) unless a docstring
says otherwise. Realism uses torchmetrics' FID and KID, either on Inception features (when the
weights are at hand) or on VAE latents; the latter are reported as latent-FD / latent-KID,
never as FID.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from translate.codec import LatentCodec
from translate.colour import to_lab

LATENT_POOL = 8  # latent features are average-pooled to at most 8 x 8 positions


def _unit(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], clamped."""
    return ((images.float() + 1) / 2).clamp(0, 1)


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM of two image batches (batch, 3, H, W) in [-1, 1] -> (batch,)."""
    return structural_similarity_index_measure(_unit(x), _unit(y), data_range=1.0, reduction="none")


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB on [0, 1] pixels of two batches (batch, 3, H, W) -> (batch,)."""
    return peak_signal_noise_ratio(
        _unit(x), _unit(y), data_range=1.0, reduction="none", dim=(1, 2, 3)
    )


def l2(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image mean squared error on [0, 1] pixels (batch, 3, H, W) -> (batch,)."""
    return (_unit(x) - _unit(y)).pow(2).flatten(1).mean(1)


def l1(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image mean absolute error on [0, 1] pixels (batch, 3, H, W) -> (batch,)."""
    return (_unit(x) - _unit(y)).abs().flatten(1).mean(1)


def high_frequency_share(images: torch.Tensor, cutoff: float = 0.25) -> torch.Tensor:
    """Per-image share of spectral power above ``cutoff`` x Nyquist: (batch, 3, H, W) -> (batch,).

    The power spectrum |FFT2|^2 of each channel's mean-free [0, 1] values, summed over channels;
    the share is the power at radial frequencies above ``cutoff`` x 0.5 cycles/pixel over all
    non-DC power (a constant image scores 0). Blur removes high frequencies, so a blurred set
    scores below the sharp one it came from. Raises ValueError for a cutoff outside (0, 1).
    """
    if not 0 < cutoff < 1:
        raise ValueError(f"cutoff must be in (0, 1) of Nyquist, got {cutoff}")
    x = _unit(images)
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    power = torch.fft.fft2(x).abs().pow(2).sum(1)  # (batch, H, W)
    fy = torch.fft.fftfreq(x.shape[-2])[:, None]
    fx = torch.fft.fftfreq(x.shape[-1])[None, :]
    radius = torch.sqrt(fy**2 + fx**2) / 0.5  # in units of Nyquist
    high = power[:, radius > cutoff].sum(1)
    total = power.flatten(1).sum(1)
    return torch.where(total > 0, high / total.clamp_min(1e-20), torch.zeros_like(total))


def sharpness_ratio(images: torch.Tensor, reference: torch.Tensor, cutoff: float = 0.25) -> float:
    """Mean high-frequency share of ``images`` over that of ``reference`` (both (n, 3, H, W)).

    1.0: as sharp as the reference (real target images); below 1: blurrier.
    """
    ref = high_frequency_share(reference, cutoff).mean()
    return float(high_frequency_share(images, cutoff).mean() / ref.clamp_min(1e-20))


def nearest_distance(
    queries: torch.Tensor, gallery: torch.Tensor, chunk: int = 256
) -> torch.Tensor:
    """Per-query RMS pixel distance to its nearest gallery image: (n, 3, H, W), (m, 3, H, W) ->
    (n,), on [0, 1] pixels."""
    g = _unit(gallery).flatten(1)
    dims = g.shape[1]
    out = [torch.cdist(_unit(q).flatten(1), g).min(dim=1).values for q in queries.split(chunk)]
    return torch.cat(out) / dims**0.5


def memorisation_ratio(
    translations: torch.Tensor, real: torch.Tensor, train: torch.Tensor
) -> float:
    """Median nearest-training distance of translations over that of real held-out targets.

    All (n, 3, H, W) in [-1, 1]. Near 1: translations are as far from the training targets as
    new real images are; well below 1: they copy training images.
    """
    fake_d = nearest_distance(translations, train).median()
    real_d = nearest_distance(real, train).median()
    return float(fake_d / real_d.clamp_min(1e-12))


def color_shift(images: torch.Tensor, truth: torch.Tensor) -> dict[str, torch.Tensor]:
    """Colour error of images against their true counterparts, both (n, 3, H, W) in [-1, 1].

    ``delta_e``: mean CIE76 colour difference (the Euclidean distance in CIELAB) per image;
    ``lightness``: the mean L* of the image minus that of the truth, over the truth's
    foreground (pixels with L* < 95, i.e. not the white background), per image: negative means
    darker. Both (n,).
    """
    lab_x, lab_y = to_lab(images), to_lab(truth)
    delta_e = (lab_x - lab_y).pow(2).sum(1).sqrt().flatten(1).mean(1)
    mask = (lab_y[:, 0] < 95).float()
    area = mask.flatten(1).sum(1).clamp_min(1)
    shift = ((lab_x[:, 0] - lab_y[:, 0]) * mask).flatten(1).sum(1) / area
    return {"delta_e": delta_e, "lightness": shift}


class LatentFeatures(nn.Module):
    """Images in [0, 1] (batch, 3, H, W) -> pooled VAE latents (batch, C * p * p), p <= 8.

    The feature space for latent-FD, latent-KID and the domain classifier.
    """

    def __init__(self, codec: LatentCodec, resolution: int, batch_size: int = 64) -> None:
        super().__init__()
        self.codec, self.batch_size = codec, batch_size
        side = resolution // codec.downsample_factor
        self.pool = min(side, LATENT_POOL)
        self.num_features = codec.latent_channels * self.pool * self.pool

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        feats = []
        for chunk in images.split(self.batch_size):
            latents = self.codec.encode(chunk.float() * 2 - 1)
            feats.append(F.adaptive_avg_pool2d(latents.float(), self.pool).flatten(1).cpu())
        return torch.cat(feats)


class InceptionFeatures(nn.Module):
    """Images in [0, 1] (batch, 3, H, W) -> Inception-v3 pool features (batch, 2048).

    torch-fidelity's FID network, with weights from a local file (nothing is downloaded).
    """

    num_features = 2048

    def __init__(self, weights_path: str, batch_size: int = 64) -> None:
        super().__init__()
        from torchmetrics.image.fid import NoTrainInceptionV3

        self.batch_size = batch_size
        self.net = NoTrainInceptionV3(
            name="inception-v3-compat",
            features_list=[str(self.num_features)],
            feature_extractor_weights_path=str(weights_path),
        )

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        chunks = images.split(self.batch_size)
        return torch.cat([self.net((c.clamp(0, 1) * 255).byte()).float() for c in chunks])


def realism(
    real: torch.Tensor,
    fake: torch.Tensor,
    features: nn.Module | None,
    inception_weights: str | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Fréchet distance and KID between two image sets (n, 3, H, W) in [-1, 1].

    With ``inception_weights`` these are FID and KID on Inception-v3 features (torch-fidelity's
    network, weights from that file); otherwise on ``features`` (e.g. ``LatentFeatures``).
    """
    if inception_weights:
        features = InceptionFeatures(inception_weights)
    if features is None:
        raise ValueError("realism needs a feature extractor or Inception weights")
    return realism_from_features(features(_unit(real)), features(_unit(fake)), seed)


class _Given(nn.Module):
    """Precomputed features through torchmetrics' feature-extractor interface."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def realism_from_features(
    real: torch.Tensor, fake: torch.Tensor, seed: int = 0
) -> dict[str, float]:
    """Fréchet distance and KID between two feature sets (n, d) and (m, d).

    KID uses up to 10 random subsets of up to 100 rows, seeded.
    """
    n = min(len(real), len(fake))
    if n < 2:
        raise ValueError("realism needs at least two images in each set")
    given = _Given(real.shape[1])
    fid_metric = FrechetInceptionDistance(feature=given)
    with warnings.catch_warnings():  # "will save all extracted features": fine at these sizes
        warnings.filterwarnings("ignore", message=".*save all extracted features.*")
        kid_metric = KernelInceptionDistance(feature=given, subsets=10, subset_size=min(100, n))
    for metric in (fid_metric, kid_metric):
        metric.update(real.float(), real=True)
        metric.update(fake.float(), real=False)
    fd = float(fid_metric.compute())
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        kid_mean, kid_std = kid_metric.compute()
    # with n <= 100 every subset is the whole set, so the spread is not a measurement
    spread = float(kid_std) if n > 100 else float("nan")
    return {"fd": max(fd, 0.0), "kid": float(kid_mean), "kid_std": spread}


def retrieval(
    queries: torch.Tensor, gallery: torch.Tensor, truth: torch.Tensor, ks: tuple[int, ...] = (1, 5)
) -> dict[str, float]:
    """Share of queries whose true match is among the k nearest gallery items (L2).

    ``queries`` (n, d), ``gallery`` (m, d), ``truth`` (n,) gallery indices.
    """
    distances = torch.cdist(queries.float(), gallery.float())  # (n, m)
    order = distances.argsort(dim=1)
    hits = order == truth[:, None]
    return {f"top{k}": float(hits[:, :k].any(dim=1).float().mean()) for k in ks}


def straightness(
    field: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    trajectory: torch.Tensor,
    times: torch.Tensor,
) -> float:
    """Mean squared deviation of the velocity from the chord along a solved path.

    ``trajectory`` (T, batch, ...) at ``times`` (T,). The chord is the constant velocity
    (x(t_end) - x(t_start)) / (t_end - t_start); a straight path scores 0. The field is
    evaluated at every frame but the last; the result is averaged over frames and elements.
    """
    chord = (trajectory[-1] - trajectory[0]) / (times[-1] - times[0])
    deviations = []
    with torch.no_grad():
        for x, t in zip(trajectory[:-1], times[:-1], strict=True):
            v = field(x, t.expand(x.shape[0]))
            deviations.append((v - chord).pow(2).mean().item())
    return float(np.mean(deviations))


CLASSIFIER_SIZE = 64  # the domain classifier sees images resized to at most 64 x 64 px
CLASSIFIER_VERSION = "cnn-1"  # part of a cached classifier's key: bump when the network changes


def _classifier_net() -> nn.Module:
    """Images (n, 3, H, W) -> logits (n, 1): four stride-2 3 x 3 convolutions (16-32-64-64
    channels, SiLU), a global mean pool and one linear unit; any H, W >= 1."""
    layers: list[nn.Module] = []
    for c_in, c_out in ((3, 16), (16, 32), (32, 64), (64, 64)):
        layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.SiLU()]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 1))


def _classifier_input(images: torch.Tensor) -> torch.Tensor:
    """(n, 3, H, W) in [-1, 1] -> float32, clamped, resized to CLASSIFIER_SIZE if larger
    (in chunks, so that large images are never all converted at once)."""
    if images.shape[-1] <= CLASSIFIER_SIZE and images.shape[-2] <= CLASSIFIER_SIZE:
        return images.float().clamp(-1, 1)
    size = (CLASSIFIER_SIZE, CLASSIFIER_SIZE)
    return torch.cat(
        [
            F.interpolate(c.float().clamp(-1, 1), size=size, mode="bilinear", antialias=True)
            for c in images.split(256)
        ]
    )


class DomainClassifier:
    """A small CNN on pixels: P(domain B | image), for the domain-success measure.

    Trained from scratch on the real training images of both domains (resized to at most
    ``CLASSIFIER_SIZE`` px), so it judges the domain independently of any checkpoint's VAE. A
    linear probe on pooled VAE latents, the earlier classifier, scored only about 91 % on real
    held-out emoji (docs/SHARPNESS.md §1), too weak to certify a domain success of 95 %.
    """

    def __init__(self, net: nn.Module) -> None:
        self.net = net.eval()

    @classmethod
    def fit(
        cls,
        pixels_a: torch.Tensor,
        pixels_b: torch.Tensor,
        *,
        epochs: int = 5,
        batch_size: int = 64,
        lr: float = 2e-3,
        seed: int = 0,
    ) -> DomainClassifier:
        """Train on images (n_a, 3, H, W) of domain A and (n_b, 3, H, W) of domain B in [-1, 1],
        both of one size.

        Logistic loss with B's images weighted by n_a / n_b, so that both domains weigh the same
        in total; AdamW for ``epochs`` passes over shuffled batches. Deterministic for a seed on
        one machine; the global random state is left as it was. Raises ValueError if a domain
        has no image or the two domains' images differ in size.
        """
        if not len(pixels_a) or not len(pixels_b):
            raise ValueError("the domain classifier needs at least one image of each domain")
        if pixels_a.shape[1:] != pixels_b.shape[1:]:
            raise ValueError(
                f"the two domains' images differ in shape: {tuple(pixels_a.shape[1:])} and "
                f"{tuple(pixels_b.shape[1:])}"
            )
        x = torch.cat([_classifier_input(pixels_a), _classifier_input(pixels_b)])  # <= 64 px
        y = torch.cat([torch.zeros(len(pixels_a)), torch.ones(len(pixels_b))])
        pos_weight = torch.tensor(len(pixels_a) / len(pixels_b))
        generator = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = _classifier_net()
        optimiser = torch.optim.AdamW(net.parameters(), lr=lr)
        net.train()
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=generator)
            for index in order.split(batch_size):
                logits = net(x[index]).squeeze(1)
                loss = F.binary_cross_entropy_with_logits(logits, y[index], pos_weight=pos_weight)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
        return cls(net)

    @torch.no_grad()
    def prob_b(self, images: torch.Tensor) -> torch.Tensor:
        """Images (n, 3, H, W) in [-1, 1] -> (n,) probabilities of domain B."""
        chunks = [
            torch.sigmoid(self.net(_classifier_input(c)).squeeze(1)) for c in images.split(256)
        ]
        return torch.cat(chunks) if chunks else torch.zeros(0)

    def success(self, images: torch.Tensor, direction: str) -> torch.Tensor:
        """Domain success of translations (n, 3, H, W) in [-1, 1] -> (n,) bool: assigned to
        the target domain, B for ``a2b`` (P(B) >= 0.5) and A for ``b2a``. Raises ValueError
        for another direction."""
        if direction not in ("a2b", "b2a"):
            raise ValueError(f"direction must be a2b or b2a, got {direction!r}")
        prob_b = self.prob_b(images)
        return prob_b >= 0.5 if direction == "a2b" else prob_b < 0.5

    def accuracy(self, images_a: torch.Tensor, images_b: torch.Tensor) -> float:
        """The share, in [0, 1], of images (n_a + n_b >= 1) assigned to their own domain."""
        correct = self.success(images_a, "b2a").sum() + self.success(images_b, "a2b").sum()
        return float(correct) / (len(images_a) + len(images_b))

    def save(self, path: str, key: str) -> None:
        """Write the weights as safetensors with ``key`` and the version as metadata (OSError
        if the file cannot be written)."""
        state = {k: v.contiguous() for k, v in self.net.state_dict().items()}
        save_file(state, path, {"key": key, "version": CLASSIFIER_VERSION})

    @classmethod
    def load(cls, path: str, key: str) -> DomainClassifier | None:
        """The saved classifier if it was trained for ``key`` by this version, else None
        (also for a missing, damaged or older file: the caller trains a new one)."""
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(path, "pt") as f:
                meta = f.metadata() or {}
                if meta.get("key") != key or meta.get("version") != CLASSIFIER_VERSION:
                    return None
            net = _classifier_net()
            net.load_state_dict(load_file(path))
        except (OSError, ValueError, RuntimeError, KeyError, SafetensorError):
            return None
        return cls(net)
