"""The adversarial endpoint term: patch discriminators on latents, one per domain.

The flow's one-step endpoint predictions (``translate.flow.predicted_endpoints``) are judged
against real latents of their domain, so that the field points at one sharp target instead of
the mean of its OT partners. The recipe follows the adversarial terms of UNSB (Kim et al.,
ICLR 2024) and ASBM (Gushchin et al., NeurIPS 2024), adapted to one deterministic field that
serves both directions:

    L_G = softplus(-D_B(z_B)) + softplus(-D_A(z_A))                 (non-saturating GAN loss,
    L_D = softplus(-D(real)) + softplus(D(fake)) + gamma/2 |grad D(real)|^2    Goodfellow et al.
                                                                      2014; R1: Mescheder et al.
                                                                      2018, eq. 9)

Each term is averaged over the discriminator's patch logits and the batch. The discriminators
judge latents, or (``space="pixels"``) the images the frozen VAE decoder makes of them, as
UNSB's PatchGAN judges pixels; the decoder then sits in the generator's graph. ``"pixels-a"``
puts only domain A's discriminator (the judge of the B -> A endpoints) on decoded images and
leaves B's on latents; ``"pixels-b"`` the reverse. ``"latents+pixels"`` (``-a``, ``-b``) keeps
the latent discriminators of both domains and adds one on decoded images for both domains (for
A, for B), whose generator terms are summed with the latent ones, as pix2pixHD sums the terms
of its discriminators at several scales (Wang et al., CVPR 2018, Sec. 3.2, "multi-scale
discriminators"). Those on images may see only their detail (``high_pass``: the image less its
Gaussian blur), not the colours that fill them. With an ``augment`` policy every input of a
discriminator, real or fake, in both losses, first passes through ``diff_augment``'s random
differentiable transforms (DiffAugment, Zhao et al., NeurIPS 2020), so that on a small data set
the discriminators cannot memorise the real latents.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from translate.config import AUGMENTATIONS, SPACES, WEIGHTINGS
from translate.runs import load_module_state, save_module_state

DOMAINS = ("a", "b")


def _patch_net(first: nn.Conv2d, width: int) -> nn.Sequential:
    """``first`` (to ``width`` channels), then two 4 x 4 convolutions of stride 2 and a 3 x 3
    logit layer, with leaky ReLUs between and no normalisation (R1 needs none)."""
    return nn.Sequential(
        first,
        nn.LeakyReLU(0.2),
        nn.Conv2d(width, 2 * width, 4, stride=2, padding=1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(2 * width, 4 * width, 4, stride=2, padding=1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(4 * width, 1, 3, padding=1),
    )


class PatchDiscriminator(nn.Module):
    """Latents (batch, C, h, w) -> patch logits (batch, 1, h/4, w/4): real (> 0) or not.

    A 3 x 3 convolution, then two strided ones (``_patch_net``); the receptive field of a logit
    covers about a quarter of a 16 x 16 latent.
    """

    def __init__(self, channels: int, width: int = 64) -> None:
        super().__init__()
        self.net = _patch_net(nn.Conv2d(channels, width, 3, padding=1), width)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.net(latents.float())


def high_pass(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Images (batch, C, H, W) -> the same less their Gaussian blur of ``sigma`` pixels (per
    channel; torchvision's kernel of 2 * ceil(3 sigma) + 1 taps, reflected at the borders).

    What is left is the detail finer than about ``sigma``: edges, lines and texture; a flat
    area of any colour becomes 0. Differentiable. Raises ValueError for sigma <= 0.
    """
    if not sigma > 0:
        raise ValueError(f"a high-pass filter needs sigma > 0 pixels, got {sigma}")
    from torchvision.transforms.functional import gaussian_blur

    size = 2 * math.ceil(3 * sigma) + 1
    return images - gaussian_blur(images, [size, size], [sigma, sigma])


class PixelPatchDiscriminator(nn.Module):
    """Images (batch, 3, H, W) in [-1, 1] -> patch logits (batch, 1, H/8, W/8).

    Three strided convolutions (``_patch_net``): a PatchGAN (Isola et al. 2017) without its
    batch norm; a logit sees about 22 x 22 pixels. With ``highpass`` > 0 it sees only
    ``high_pass(images, highpass)``: how crisp lines and fills are, not which colours fill them.
    """

    def __init__(self, channels: int = 3, width: int = 64, highpass: float = 0.0) -> None:
        super().__init__()
        self.highpass = highpass
        self.net = _patch_net(nn.Conv2d(channels, width, 4, stride=2, padding=1), width)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = images.float()
        return self.net(high_pass(images, self.highpass) if self.highpass > 0 else images)


def critics(space: str) -> dict[str, tuple[str, str]]:
    """The discriminators under ``adversarial.space``: their names, each mapped to ``(domain,
    judged)``, the domain whose endpoints it judges (``"a"``, ``"b"``) and what it sees of them
    (``"latents"`` or ``"pixels"``, the decoded images).

    Every space has one discriminator per domain named after it (``"a"``, ``"b"``): on latents
    for ``latents`` and the ``latents+pixels`` spaces, on decoded images for ``pixels``, and for
    ``pixels-a`` (``pixels-b``) only that domain's. ``latents+pixels`` adds one on decoded
    images per domain (``"a_pixels"``, ``"b_pixels"``), ``latents+pixels-a`` (``-b``) that
    domain's only. Raises ValueError for an unknown space.
    """
    if space not in SPACES:
        raise ValueError(f"unknown discriminator space {space!r}; choose from {SPACES}")
    first, _, extra = space.partition("+")
    if first == "pixels":
        main = dict.fromkeys(DOMAINS, "pixels")
    elif first.startswith("pixels-"):
        pixel_domain = first.removeprefix("pixels-")
        main = {d: "pixels" if d == pixel_domain else "latents" for d in DOMAINS}
    else:
        main = dict.fromkeys(DOMAINS, "latents")
    names = {d: (d, judged) for d, judged in main.items()}
    if extra:
        extra_domains = DOMAINS if extra == "pixels" else (extra.removeprefix("pixels-"),)
        names |= {f"{d}_pixels": (d, "pixels") for d in extra_domains}
    return names


class Discriminators(nn.Module):
    """The patch discriminators of ``critics(space)``, under their names: on latents of
    ``channels`` channels or on RGB images; those on images see their ``high_pass`` of
    ``highpass`` pixels where it is > 0. Raises ValueError for an unknown space."""

    def __init__(
        self, channels: int, width: int = 64, space: str = "latents", highpass: float = 0.0
    ) -> None:
        super().__init__()
        self.critics = critics(space)  # name -> (domain, judged)
        self.nets = nn.ModuleDict(
            {
                name: PixelPatchDiscriminator(3, width, highpass)
                if judged == "pixels"
                else PatchDiscriminator(channels, width)
                for name, (_, judged) in self.critics.items()
            }
        )

    def forward(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """The logits of the discriminator ``name`` for its inputs x (latents or images)."""
        return self.nets[name](x)


def diff_augment(
    x: torch.Tensor, policy: str, generator: torch.Generator | None = None
) -> torch.Tensor:
    """DiffAugment (Zhao et al., NeurIPS 2020, Sec. 3 and its ``translation`` and ``cutout``
    policies) of a discriminator's input x (batch, C, h, w); differentiable in x.

    ``translation`` shifts each sample by a whole number of cells in [-h/8, h/8] x [-w/8, w/8]
    (at least one), filling with zeros; ``cutout`` zeroes one (h/2) x (w/2) square per sample,
    its corner drawn in [-h/4, h - h/4] x [-w/4, w - w/4] so that it may hang over an edge;
    ``translation-cutout`` does both, in that order; ``none`` returns x itself. The draws
    come from ``generator`` (on x's device). Raises ValueError for an unknown policy.
    """
    if policy not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {policy!r}; choose from {AUGMENTATIONS}")
    if policy == "none":
        return x
    n, _, h, w = x.shape
    device = x.device

    def draw(low: int, high: int) -> torch.Tensor:  # (n, 1, 1) integers in [low, high]
        return torch.randint(low, high + 1, (n, 1, 1), generator=generator, device=device)

    rows = torch.arange(h, device=device).view(1, h, 1)
    cols = torch.arange(w, device=device).view(1, 1, w)
    if "translation" in policy:
        rh, rw = max(1, round(h / 8)), max(1, round(w / 8))
        dy, dx = draw(-rh, rh), draw(-rw, rw)
        padded = F.pad(x, (rw, rw, rh, rh))
        batch = torch.arange(n, device=device).view(n, 1, 1)
        x = padded.permute(0, 2, 3, 1)[batch, rows + rh - dy, cols + rw - dx].permute(0, 3, 1, 2)
    if "cutout" in policy:
        sh, sw = max(1, h // 2), max(1, w // 2)
        y0, x0 = draw(-(sh // 2), h - sh // 2), draw(-(sw // 2), w - sw // 2)
        inside = (rows >= y0) & (rows < y0 + sh) & (cols >= x0) & (cols < x0 + sw)
        x = x * (~inside).unsqueeze(1).to(x.dtype)
    return x


@dataclass(frozen=True)
class Endpoints:
    """Latents of both domains, each (batch, C, h, w)."""

    a: torch.Tensor
    b: torch.Tensor


def _weighted_mean(per_patch: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """(batch, 1, h, w) losses -> a scalar: the mean, or a per-sample weighted mean."""
    per_sample = per_patch.flatten(1).mean(1)
    if weight is None:
        return per_sample.mean()
    return (per_sample * weight).sum() / weight.sum().clamp_min(1e-12)


def endpoint_weights(t: torch.Tensor, weighting: str) -> Endpoints | None:
    """Per-sample weights (batch,) of the endpoints predicted from times t (batch,).

    ``uniform``: None (every prediction counts alike). ``distance``: a prediction counts by how
    far it jumps, 1 - t for z_B and t for z_A, so that the one-step translations from the
    sources (the blurry ones) dominate and near-trivial predictions next to the target do not.
    Raises ValueError for an unknown name.
    """
    if weighting == "uniform":
        return None
    if weighting == "distance":
        return Endpoints(t.detach().float(), (1 - t).detach().float())
    raise ValueError(f"unknown endpoint weighting {weighting!r}; choose from {WEIGHTINGS}")


# what the discriminators see, by discriminator name (``critics``): latents (batch, C, h, w) or
# decoded images (batch, 3, H, W); an ``Endpoints`` stands for {"a": .a, "b": .b}
Views = dict[str, torch.Tensor]


def _views(x: Views | Endpoints) -> Views:
    return {d: getattr(x, d) for d in DOMAINS} if isinstance(x, Endpoints) else x


def generator_loss(
    disc: Discriminators,
    fake: Views | Endpoints,
    weights: Endpoints | None = None,
    augment: str = "none",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Non-saturating loss of predicted endpoints under every discriminator, summed (a scalar);
    ``fake`` holds each discriminator's view of them (``Adversary.view``), each first augmented
    by ``diff_augment(., augment, generator)``; ``weights`` weight the samples of each domain."""
    fake = _views(fake)
    return sum(
        _weighted_mean(
            F.softplus(-disc(name, diff_augment(fake[name], augment, generator))),
            _get(weights, domain),
        )
        for name, (domain, _) in disc.critics.items()
    )


def _get(weights: Endpoints | None, domain: str) -> torch.Tensor | None:
    return None if weights is None else getattr(weights, domain)


@dataclass(frozen=True)
class DiscriminatorLoss:
    """The discriminators' objective and its parts (scalars)."""

    total: torch.Tensor  # logistic loss + R1, summed over the discriminators
    logistic: torch.Tensor
    r1: torch.Tensor  # mean squared gradient norm on the real inputs, before gamma / 2


def discriminator_loss(
    disc: Discriminators,
    real: Views | Endpoints,
    fake: Views | Endpoints,
    r1_gamma: float | dict[str, float],
    weights: Endpoints | None = None,
    augment: str = "none",
    generator: torch.Generator | None = None,
) -> DiscriminatorLoss:
    """Logistic loss on real vs (detached) fake views, plus the R1 penalty on the reals.

    ``real`` and ``fake`` hold each discriminator's inputs by its name (``critics``; an
    ``Endpoints`` for the two of a one-per-domain space). ``weights`` (``endpoint_weights``)
    weight the fakes of each domain. ``r1_gamma``: the R1 weight of every discriminator, or one
    per discriminator name; 0 skips that one's gradient penalty (and its double backward).
    Every input is first augmented by ``diff_augment(., augment, generator)``; R1 is the
    gradient with respect to the real inputs before their augmentation (as DiffAugment's
    StyleGAN2 code computes it). Raises KeyError when a discriminator has no input or weight.
    """
    real, fake = _views(real), _views(fake)
    names = list(disc.critics)
    gammas = r1_gamma if isinstance(r1_gamma, dict) else dict.fromkeys(names, r1_gamma)
    device = real[names[0]].device
    logistic = torch.zeros((), device=device)
    norms = {}  # name -> mean squared gradient norm on its reals, before its weight
    for name in names:
        domain = disc.critics[name][0]
        x_real = real[name].detach().float().requires_grad_(gammas[name] > 0)
        logits_real = disc(name, diff_augment(x_real, augment, generator))
        logits_fake = disc(name, diff_augment(fake[name].detach(), augment, generator))
        fake_loss = _weighted_mean(F.softplus(logits_fake), _get(weights, domain))
        logistic = logistic + F.softplus(-logits_real).mean() + fake_loss
        if gammas[name] > 0:
            (grad,) = torch.autograd.grad(logits_real.sum(), x_real, create_graph=True)
            norms[name] = grad.pow(2).flatten(1).sum(1).mean()
    r1 = sum(norms.values(), torch.zeros((), device=device))
    if len({gammas[name] for name in names}) == 1:  # one weight: applied to the sum
        penalty = gammas[names[0]] / 2 * r1
    else:
        penalty = sum(gammas[name] / 2 * norm for name, norm in norms.items())
    return DiscriminatorLoss(logistic + penalty, logistic.detach(), r1.detach())


def average_gradients(module: nn.Module, reduce=None) -> None:
    """Average a module's gradients over processes with ``reduce`` (e.g. ``accelerator.reduce``),
    for training-only modules that are not wrapped for data parallelism; None: one process."""
    if reduce is None:
        return
    for p in module.parameters():
        if p.grad is not None:
            p.grad = reduce(p.grad, reduction="mean")


def ramp(step: int, start: int, length: int) -> float:
    """The adversarial weight's share at optimizer step ``step`` (1-based): 0 up to ``start``,
    then linear to 1 over ``length`` steps."""
    if step <= start:
        return 0.0
    if length <= 0:
        return 1.0
    return min(1.0, (step - start) / length)


class Adversary:
    """The discriminators, their optimizer and their update, for the training loop.

    The discriminators are not wrapped for data parallelism (R1's double backward does not go
    through DistributedDataParallel): ``update`` averages their gradients over processes with
    the ``reduce`` function it is given (e.g. ``accelerator.reduce``), so every process holds
    the same weights. ``save``/``load`` write safetensors weights and the optimizer state
    (loaded with ``torch.load(weights_only=True)``).
    """

    WEIGHTS, OPTIMIZER = "discriminators.safetensors", "optimizer.bin"

    def __init__(
        self,
        channels: int,
        width: int,
        lr: float,
        r1_gamma: float | dict[str, float],
        device,
        seed: int,
        decode: Callable[[torch.Tensor], torch.Tensor] | None = None,
        augment: str = "none",
        space: str = "latents",
        pixel_highpass: float = 0.0,
    ) -> None:
        """``space`` (``critics``) says which discriminators there are and which of them judge
        decoded images; ``decode`` (latents -> images in [-1, 1], differentiable) makes them,
        and with ``pixel_highpass`` > 0 they see only their detail (``high_pass``).
        ``r1_gamma``: the R1 weight of every discriminator or one per discriminator name.
        ``augment``: the ``diff_augment`` policy of every discriminator input. Raises ValueError
        for an unknown policy or space, or for a pixel space without ``decode``."""
        if augment not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation {augment!r}; choose from {AUGMENTATIONS}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.disc = Discriminators(channels, width, space, pixel_highpass).to(device)
        self.critics = self.disc.critics  # name -> (domain, judged)
        if decode is None and any(self.in_pixels(name) for name in self.critics):
            raise ValueError(f"discriminator space {space!r} needs a decoder")
        self.optimizer = torch.optim.AdamW(self.disc.parameters(), lr=lr, betas=(0.5, 0.99))
        # discriminator name -> R1 weight
        if isinstance(r1_gamma, dict):
            self.r1_gamma = {name: r1_gamma[name] for name in self.critics}
        else:
            self.r1_gamma = dict.fromkeys(self.critics, r1_gamma)
        self.decode = decode
        self.augment = augment

    def in_pixels(self, name: str) -> bool:
        """Whether the discriminator ``name`` judges decoded images."""
        return self.critics[name][1] == "pixels"

    def view(self, endpoints: Endpoints) -> Views:
        """What the discriminators judge, by name: the latents of their domain or their decoded
        images (with the graph to the latents, unless called under ``torch.no_grad``); each
        domain is decoded once, however many discriminators see its images."""
        images: dict[str, torch.Tensor] = {}
        views = {}
        for name, (domain, judged) in self.critics.items():
            latents = getattr(endpoints, domain)
            if judged == "pixels":
                if domain not in images:
                    images[domain] = self.decode(latents)
                views[name] = images[domain]
            else:
                views[name] = latents
        return views

    def generator_loss(
        self,
        fake: Views,
        weights: Endpoints | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The generator term of ``view``s of the fakes; ``generator`` draws the augmentations."""
        return generator_loss(self.disc, fake, weights, self.augment, generator)

    def update(
        self,
        real: Views,
        fake: Views,
        reduce=None,
        weights: Endpoints | None = None,
        generator: torch.Generator | None = None,
        r1_scale: float = 1.0,
    ) -> DiscriminatorLoss:
        """One optimizer step of the discriminators on real vs fake ``view``s; ``generator``
        draws the augmentations. ``r1_scale`` multiplies the R1 weights given at construction
        for this step (0: no R1), for lazy regularisation."""
        self.optimizer.zero_grad(set_to_none=True)
        gamma = {d: r1_scale * g for d, g in self.r1_gamma.items()}
        loss = discriminator_loss(self.disc, real, fake, gamma, weights, self.augment, generator)
        loss.total.backward()
        average_gradients(self.disc, reduce)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)  # the generator's backward fills them again
        return loss

    def save(self, folder: Path) -> None:
        save_module_state(folder, self.disc, self.optimizer, self.WEIGHTS, self.OPTIMIZER)

    def load(self, folder: Path) -> None:
        """Restore from ``save``'s folder; raises FileNotFoundError when a file is missing."""
        load_module_state(folder, self.disc, self.optimizer, self.WEIGHTS, self.OPTIMIZER)
