"""Colour: CIELAB conversion and each image's colour composition, where the colours are left out.

``colour_histograms`` is the feature of the pairing cost's colour term (``flow.colour_weight``,
``translate.coupling``; cached next to the latents by ``translate.latent_cache.cached_colours``):
two images that hold the same colours in the same shares are close whatever their layout, so a
small region of one colour (a face's skin tone) counts wherever it is.
Colour histograms as an image's layout-free signature: Swain & Ballard, *Color Indexing*, IJCV
1991; the Hellinger embedding (square roots of the shares) as in Arandjelović & Zisserman's
RootSIFT (CVPR 2012).
"""

from __future__ import annotations

import numpy as np
import torch

BACKGROUND_LIGHTNESS = 95.0  # pixels at least this light (L*) are background, not composition
A_B_RANGE = 80.0  # histogram centres span a*, b* in [-80, 80]
BUDGET = 2**25  # floats of (L*, a*) kernel products per step: images * H*W * bins**2 (128 MB)


def to_lab(images: torch.Tensor) -> torch.Tensor:
    """sRGB images (n, 3, H, W) in [-1, 1] -> CIELAB (n, 3, H, W): L* in [0, 100], a*, b*.

    Pillow's ImageCms (LittleCMS) does the conversion, D50 white point, 8-bit precision.
    """
    from PIL import Image, ImageCms

    transform = ImageCms.buildTransformFromOpenProfiles(
        ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB"
    )
    unit = ((images.float() + 1) / 2).clamp(0, 1)
    pixels = (unit * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    out = []
    for array in pixels:
        lab = np.asarray(ImageCms.applyTransform(Image.fromarray(array), transform))
        lightness = lab[..., 0].astype(np.float32) * (100 / 255)
        ab = lab[..., 1:].view(np.int8).astype(np.float32)  # a*, b* are signed bytes
        out.append(np.concatenate([lightness[..., None], ab], axis=-1))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2)


def colour_histograms(images: torch.Tensor, bins: int) -> torch.Tensor:
    """Soft CIELAB colour histograms of images (n, 3, H, W) in [-1, 1] -> (n, bins**3), float32.

    ``bins`` centres per axis span L* 0..100 and a*, b* -80..80. Each pixel darker than
    ``BACKGROUND_LIGHTNESS`` spreads one unit of mass over the centres by a separable Gaussian
    kernel whose width is one centre spacing per axis; the histogram is normalised to sum 1
    (an image with no such pixel gives zeros). Rows are the square roots of the shares, so the
    squared Euclidean distance of two rows is twice the squared Hellinger distance of the
    histograms, which weighs a small share of one colour more than a plain L2 would.
    Raises ValueError for bins < 2.
    """
    if bins < 2:
        raise ValueError(f"a colour histogram needs at least 2 bins per axis, got {bins}")
    centres = [torch.linspace(0, 100, bins), *[torch.linspace(-A_B_RANGE, A_B_RANGE, bins)] * 2]
    rows = []
    per_step = max(1, BUDGET // (images[0, 0].numel() * bins * bins)) if len(images) else 1
    for chunk in images.split(per_step):
        lab = to_lab(chunk).flatten(2)  # (n, 3, H*W)
        weights = []
        for axis, c in enumerate(centres):  # (n, H*W, bins) kernel weights, each row sums to 1
            w = torch.exp(-0.5 * ((lab[:, axis, :, None] - c) / (c[1] - c[0])) ** 2)
            weights.append(w / w.sum(-1, keepdim=True))
        foreground = (lab[:, 0] < BACKGROUND_LIGHTNESS).float()[..., None]  # (n, H*W, 1)
        joint = (weights[0] * foreground)[..., :, None] * weights[1][..., None, :]
        hist = joint.flatten(2).transpose(1, 2) @ weights[2]  # (n, bins*bins, bins)
        hist = hist.flatten(1)
        rows.append((hist / hist.sum(1, keepdim=True).clamp_min(1e-12)).sqrt())
    return torch.cat(rows) if rows else torch.zeros(0, bins**3)
