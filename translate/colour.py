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


# linear sRGB -> XYZ, adapted to the D50 white by the Bradford transform (as ICC profiles are)
SRGB_TO_XYZ_D50 = torch.tensor(
    [
        [0.4360747, 0.3850649, 0.1430804],
        [0.2225045, 0.7168786, 0.0606169],
        [0.0139322, 0.0971045, 0.7141733],
    ]
)
D50_WHITE = torch.tensor([0.9642, 1.0, 0.8249])


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


def srgb_to_lab(images: torch.Tensor) -> torch.Tensor:
    """sRGB images (n, 3, H, W) in [-1, 1] -> CIELAB (n, 3, H, W), float32, differentiable.

    The same D50 CIELAB as ``to_lab`` (which goes through LittleCMS at 8 bits and has no
    gradient), computed in torch for losses: the sRGB transfer function of IEC 61966-2-1,
    the sRGB -> XYZ matrix adapted to D50 by the Bradford transform (Lindbloom's table), and
    CIE 15:2004's L*a*b* formulas (f(t) = t^(1/3) above (6/29)^3, linear below).
    """
    unit = ((images.float() + 1) / 2).clamp(0, 1)
    linear = torch.where(unit <= 0.04045, unit / 12.92, ((unit + 0.055) / 1.055) ** 2.4)
    xyz = torch.einsum("ij,njhw->nihw", SRGB_TO_XYZ_D50.to(linear.device), linear)
    t = xyz / D50_WHITE.to(linear.device).view(1, 3, 1, 1)
    delta = 6 / 29
    f = torch.where(t > delta**3, t.clamp_min(delta**3) ** (1 / 3), t / (3 * delta**2) + 4 / 29)
    return torch.stack(
        [116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], dim=1
    )


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
