"""The content terms: what a translation should keep of its source.

Three terms compare a predicted endpoint with its source: PatchNCE (below), the transport cost
(``transport_cost``) and the colours of the decoded images, where they lie (``colour_layout``)
or in what shares (``colour_composition``).

A translation should keep what its source shows where the source shows it, while its style
changes. PatchNCE (Park et al., *Contrastive Learning for Unpaired Image-to-Image Translation*,
ECCV 2020, eqs. 2-3; the regulariser UNSB adds, Kim et al., ICLR 2024) asks that a patch
of the translation be more like the source's patch at the same place than like the source's
patches anywhere else, in a learned feature space:

    l(q, k+, k-) = -log( exp(q.k+ / T) / (exp(q.k+ / T) + sum_n exp(q.k-_n / T)) )

with q, k L2-normalised features of the translation's and the source's patch, T the
temperature, the source's features detached (the keys), and the loss averaged over sampled
locations, layers and images. Here the features are those of a small convolutional net on
latents, shared by both domains and trained by the same loss as the field (as CUT trains its
projection heads), with one MLP head per layer.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from translate.adversarial import average_gradients
from translate.colour import srgb_to_lab
from translate.runs import load_module_state, save_module_state


class PatchFeatures(nn.Module):
    """Latents (batch, C, h, w) -> per-location features of three layers, each
    (batch, h * w, dim), L2-normalised along the last axis.

    The layers are the latent itself, one 3 x 3 convolution (a patch of 3 x 3 latent cells)
    and a second one (5 x 5 cells); each passes through its own two-layer MLP head to ``dim``.
    """

    def __init__(self, channels: int, width: int = 64, dim: int = 64) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            [nn.Conv2d(channels, width, 3, padding=1), nn.Conv2d(width, width, 3, padding=1)]
        )
        sizes = (channels, width, width)
        self.heads = nn.ModuleList(
            [nn.Sequential(nn.Linear(c, dim), nn.ReLU(), nn.Linear(dim, dim)) for c in sizes]
        )

    def forward(self, latents: torch.Tensor) -> list[torch.Tensor]:
        maps, x = [latents.float()], latents.float()
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.2)
            maps.append(x)
        return [
            F.normalize(head(m.flatten(2).transpose(1, 2)), dim=-1)
            for head, m in zip(self.heads, maps, strict=True)
        ]


def patch_nce(
    queries: torch.Tensor, keys: torch.Tensor, locations: torch.Tensor, temperature: float
) -> torch.Tensor:
    """PatchNCE at ``locations`` (P,) of features (batch, h * w, dim): a scalar.

    Row p of image i is the query; the key at the same location is its positive, the keys at
    the other P - 1 sampled locations of the same image its negatives (CUT's default: negatives
    from the image itself, not the batch). ``keys`` are detached.
    """
    q = queries[:, locations]  # (batch, P, dim)
    k = keys[:, locations].detach()
    logits = q @ k.transpose(1, 2) / temperature  # (batch, P, P); the diagonal is positive
    target = torch.arange(len(locations), device=q.device).expand(len(q), -1)
    return F.cross_entropy(logits.flatten(0, 1), target.flatten())


def transport_cost(translations: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
    """Mean squared distance between translations and their sources, both (batch, C, h, w), in
    squared latent units per element: a scalar, with gradient to both.

    The quadratic transport cost tau * |z_A - z_B_hat|^2 that UNSB adds to its adversarial term
    (Kim et al., ICLR 2024: the transport cost of its Schrodinger-bridge loss), here from
    the source to the predicted endpoint.
    """
    return (translations.float() - sources.float()).pow(2).flatten(1).mean(1).mean()


CHROMA_THRESHOLD = 5.0  # C* (CIELAB chroma) at or below which a pixel counts as neutral
COLOUR_QUANTILES = 32  # quantile levels at which two projected colour distributions are compared
LAB_SCALE = 100.0  # CIELAB units per unit of the colour term's distances


def _directions() -> torch.Tensor:
    """13 fixed unit directions in CIELAB (13, 3): the three axes, the four body diagonals
    and the six face diagonals of the cube, so the term is the same at every step."""
    axes = torch.eye(3)
    body = torch.tensor([[1, 1, 1], [1, 1, -1], [1, -1, 1], [-1, 1, 1]], dtype=torch.float32)
    face = torch.tensor(
        [[1, 1, 0], [1, -1, 0], [1, 0, 1], [1, 0, -1], [0, 1, 1], [0, 1, -1]], dtype=torch.float32
    )
    return F.normalize(torch.cat([axes, body, face]), dim=1)


def chromatic_quantiles(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (n, 3, H, W) in [-1, 1] -> the quantiles of their chromatic pixels' CIELAB
    colours along fixed directions (n, 13, ``COLOUR_QUANTILES``), in units of ``LAB_SCALE``,
    and which images have at least two chromatic pixels (n,), bool.

    A pixel is chromatic when its chroma C* = sqrt(a*^2 + b*^2) exceeds ``CHROMA_THRESHOLD``:
    blacks, greys and whites (a style's outlines, shading and background) are left out. The
    selection carries no gradient; the quantiles are differentiable in the chosen colours.
    """
    lab = srgb_to_lab(images).flatten(2)  # (n, 3, H*W)
    with torch.no_grad():
        chromatic = lab[:, 1:].norm(dim=1) > CHROMA_THRESHOLD  # (n, H*W)
    lab = lab / LAB_SCALE
    directions = _directions().to(lab.device)
    levels = torch.linspace(0, 1, COLOUR_QUANTILES, device=lab.device)
    rows, valid = [], chromatic.sum(1) >= 2
    for pixels, keep, ok in zip(lab, chromatic, valid, strict=True):
        if not ok:
            rows.append(lab.new_zeros(len(directions), COLOUR_QUANTILES))
            continue
        projected = directions @ pixels[:, keep]  # (13, pixels kept)
        rows.append(torch.quantile(projected, levels, dim=1).T)
    return torch.stack(rows), valid


def colour_composition(translations: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
    """The sliced Wasserstein-2 distance between the CIELAB colours of the chromatic pixels of
    translations and of their sources, images (batch, 3, H, W) in [-1, 1]: a scalar, squared
    CIELAB distance / ``LAB_SCALE``^2, averaged over 13 fixed directions, the quantile levels
    and the images that have chromatic pixels on both sides (0 when none has), with gradient to
    the translations (the sources' side is detached).

    Along each direction the two colour distributions are compared quantile by quantile, the
    one-dimensional optimal transport: the sliced Wasserstein distance of Rabin et al.
    (*Wasserstein Barycenter and its Application to Texture Mixing*, SSVM 2011), used as a loss
    by Heitz et al. (*A Sliced Wasserstein Loss for Neural Texture Synthesis*, CVPR 2021), so
    a translation's colour is pulled towards the source's colour it is matched with, however
    far apart they are, and where each colour lies is left out: a translation may redraw its
    source and still keep its colours (a face's skin tone). Neutral pixels are left out, so one
    style's black outlines or grey shading are not held against another's.

    What it does not see: a translation whose pixels turn neutral leaves them out of its
    distribution (the selection carries no gradient), and an image with fewer than two
    chromatic pixels drops out of the mean, so a greyed-out translation is not penalised.
    """
    mine, mine_ok = chromatic_quantiles(translations)
    with torch.no_grad():
        theirs, theirs_ok = chromatic_quantiles(sources)
    both = mine_ok & theirs_ok
    if not both.any():
        return translations.sum() * 0  # a zero that keeps the graph
    return (mine[both] - theirs[both]).square().mean()


def colour_layout(translations: torch.Tensor, sources: torch.Tensor, cell: int) -> torch.Tensor:
    """The mean squared difference between the CIELAB colours of translations and of their
    sources, images (batch, 3, H, W) in [-1, 1], each averaged over cells of ``cell`` x ``cell``
    pixels: a scalar, squared CIELAB distance / ``LAB_SCALE``^2, with gradient to the
    translations (the sources' side is detached).

    The colour loss of Ignatov et al. (*DSLR-Quality Photos on Mobile Devices with Deep
    Convolutional Networks*, ICCV 2017: both images Gaussian-blurred, then compared by their
    Euclidean distance), here with a box blur and in CIELAB: a face keeps the colour of the
    source's face where it lies, while the drawing inside each cell (lines, texture, exact
    shapes) is free. Unlike the chromatic
    composition, lightness counts everywhere, outlines included.
    """
    mine = F.avg_pool2d(srgb_to_lab(translations), cell) / LAB_SCALE
    with torch.no_grad():
        theirs = F.avg_pool2d(srgb_to_lab(sources), cell) / LAB_SCALE
    return (mine - theirs).square().mean()


def colour_consistency(
    translations: torch.Tensor, sources: torch.Tensor, match: str, cell: int
) -> torch.Tensor:
    """The colour term of translations against their sources, images (batch, 3, H, W) in
    [-1, 1]: ``colour_layout`` (``match="layout"``, cells of ``cell`` pixels) or
    ``colour_composition`` (``"composition"``). Raises ValueError for another ``match``."""
    if match == "layout":
        return colour_layout(translations, sources, cell)
    if match == "composition":
        return colour_composition(translations, sources)
    raise ValueError(f"unknown colour match {match!r}; choose layout or composition")


class ContentTerm:
    """The feature net, its optimizer and the PatchNCE loss, for the training loop.

    The net is not wrapped for data parallelism: ``step`` averages its gradients over
    processes with the ``reduce`` function it is given (e.g. ``accelerator.reduce``), so every
    process holds the same weights. ``save``/``load`` write safetensors weights and the
    optimizer state (loaded with ``torch.load(weights_only=True)``).
    """

    WEIGHTS, OPTIMIZER = "features.safetensors", "optimizer.bin"

    def __init__(
        self,
        channels: int,
        patches: int,
        temperature: float,
        lr: float,
        device,
        seed: int,
    ) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = PatchFeatures(channels).to(device)
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=lr, betas=(0.5, 0.99))
        self.patches, self.temperature = patches, temperature

    def loss(
        self, translations: torch.Tensor, sources: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """PatchNCE between translations and their sources, both (batch, C, h, w): a scalar,
        averaged over the three layers. ``patches`` locations (all, if there are fewer) are
        drawn from ``generator``, the same for every image and layer."""
        queries, keys = self.net(translations), self.net(sources)
        cells = queries[0].shape[1]
        order = torch.randperm(cells, generator=generator, device=generator.device)
        locations = order[: min(self.patches, cells)].to(translations.device)
        pairs = zip(queries, keys, strict=True)
        layers = [patch_nce(q, k, locations, self.temperature) for q, k in pairs]
        return torch.stack(layers).mean()

    def step(self, reduce=None) -> None:
        """One optimizer step on the gradients the field's backward left in the net."""
        average_gradients(self.net, reduce)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def save(self, folder: Path) -> None:
        save_module_state(folder, self.net, self.optimizer, self.WEIGHTS, self.OPTIMIZER)

    def load(self, folder: Path) -> None:
        """Restore from ``save``'s folder; raises FileNotFoundError when a file is missing."""
        load_module_state(folder, self.net, self.optimizer, self.WEIGHTS, self.OPTIMIZER)
