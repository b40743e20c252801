"""Calibrate the sharpness measure: known degradations of real targets next to translations.

    python benchmarks/sharpness_calibration.py --checkpoint runs/emoji/checkpoint-final \
        --data .cache/translate/emoji-om17.0.0-tw2.0.0-v2 \
        --direction a2b --nfe 1,4,8 --grid sharpness-calibration.png

``--data`` is a CycleGAN-layout folder (its ``testA`` and ``testB`` are read). On the
test images of the target domain it scores, against the real targets:

- the real targets themselves, their reconstructions decode(encode(y)) by the checkpoint's
  VAE, Gaussian blurs of the real targets (σ = 0.7, 1.0, 1.5 px, torchvision) and the real
  targets with Gaussian noise (std 0.1 on [-1, 1] pixels);
- the checkpoint's translations of the source domain's test images, in ``--nfe`` Euler steps.

Measures: ``spectral`` is ``translate.metrics.sharpness_ratio`` (the share of spectral power
above a quarter of Nyquist, over the real targets'; what ``translate-eval`` reports as
sharpness); ``edge98`` is the mean 98th percentile of the luminance gradient magnitude (Sobel)
over the real targets' (how steep the steepest edges are). The grid shows each set on one row,
for eight test emoji evenly spaced over the split, so the numbers can be read against the eye.
Result and reading: docs/SHARPNESS.md ("What the sharpness measure sees").
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from common import add_guidance_option, guidance_used, table, write_json
from PIL import Image
from torchvision.transforms.functional import gaussian_blur

from translate import Translator
from translate.autoencoder import _as_float, _load_pixels
from translate.metrics import sharpness_ratio

SOBEL = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8


def edge_strength(images: torch.Tensor, quantile: float = 0.98) -> torch.Tensor:
    """Per-image ``quantile`` of the luminance gradient magnitude: (n, 3, H, W) in [-1, 1] -> (n,).

    Luminance by ITU-R BT.601 weights on [0, 1] values; gradients by the 3 x 3 Sobel kernels
    (divided by 8, so a unit step edge gives 0.5), with replicated borders.
    """
    rgb = images.float().add(1).div(2)
    luma = (0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]).unsqueeze(1)
    luma = F.pad(luma, (1, 1, 1, 1), mode="replicate")
    gx = F.conv2d(luma, SOBEL.view(1, 1, 3, 3))
    gy = F.conv2d(luma, SOBEL.T.contiguous().view(1, 1, 3, 3))
    return (gx.pow(2) + gy.pow(2)).sqrt().flatten(1).quantile(quantile, dim=1)


def degraded_sets(tr: Translator, real: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    """The real targets, their VAE reconstructions, three blurs and a noised copy."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        recon = torch.cat([tr.codec.decode(tr.codec.encode(x)) for x in real.split(64)])
    sets = {"real targets": real, "VAE reconstruction": recon}
    for sigma in (0.7, 1.0, 1.5):
        size = 2 * round(3 * sigma) + 1
        sets[f"Gaussian blur σ={sigma}"] = gaussian_blur(real, [size, size], [sigma, sigma])
    noise = torch.randn(real.shape, generator=g)
    sets["noise std 0.1"] = (real + 0.1 * noise).clamp(-1, 1)
    return sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--direction", default="a2b", choices=("a2b", "b2a"))
    parser.add_argument("--nfe", default="1,4,8")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grid", default=None, help="write the example grid here (PNG)")
    add_guidance_option(parser)
    parser.add_argument("--out", default="benchmarks/results/sharpness_calibration.json")
    args = parser.parse_args()

    src_name, tgt_name = ("A", "B") if args.direction == "a2b" else ("B", "A")
    tr = Translator.from_pretrained(args.checkpoint)
    guidance = guidance_used(tr, args.guidance)
    size = tr.resolution
    src, real = (
        _as_float(_load_pixels(sorted((args.data / f"test{name}").iterdir()), size, None, name))
        for name in (src_name, tgt_name)
    )
    sets = degraded_sets(tr, real, args.seed)
    with torch.no_grad():
        for nfe in (int(n) for n in args.nfe.split(",")):
            outs = []
            for x in src.split(64):
                z = tr.translate_latents(
                    tr.codec.encode(x), args.direction, nfe, "euler", guidance=args.guidance
                ).x
                outs.append(tr.codec.decode(z))
            sets[f"translations, {nfe} NFE"] = torch.cat(outs)
    reference = edge_strength(real).mean()
    rows = [
        {
            "set": name,
            "spectral": sharpness_ratio(images, real),
            "edge98": float(edge_strength(images).mean() / reference),
        }
        for name, images in sets.items()
    ]
    print(f"{args.checkpoint}: {args.direction}, {len(src)} sources, {len(real)} real targets")
    print(table(rows, ["set", "spectral", "edge98"]))
    if args.grid:
        pick = torch.linspace(0, min(len(s) for s in sets.values()) - 1, 8).long()
        grid = torch.cat([torch.cat(list(s[pick]), -1) for s in sets.values()], -2)
        pixels = grid.add(1).mul(127.5).clamp(0, 255).round().byte().permute(1, 2, 0).numpy()
        Image.fromarray(pixels).save(args.grid)
        print(f"grid rows, top to bottom: {', '.join(sets)}")
    settings = {key: str(value) for key, value in vars(args).items()}
    write_json(args.out, {"args": settings, "guidance": guidance, "rows": rows})


if __name__ == "__main__":
    main()
