"""Translator speed against NFE and batch size, and its overhead beyond its parts.

    python benchmarks/inference.py [--checkpoint runs/emoji/checkpoint-final] [--nfe 1,2,4,8,16]
        [--vae-dtype auto,float32,bfloat16]

For each batch size and NFE (Euler steps) it times a whole ``Translator.__call__`` on PIL
images and, separately, its parts on the same batch: VAE encode, one UNet evaluation and VAE
decode. Overhead = call / (encode + NFE x UNet + decode) - 1. Without a checkpoint, a
randomly initialised model of the default config is used (speed does not depend on weights).
Each VAE dtype in ``--vae-dtype`` is measured in turn ("auto" is what ``Translator`` picks).
"""

from __future__ import annotations

import argparse

import torch
from common import machine, pick_device, table, timed, write_json
from PIL import Image

from translate import Translator
from translate.autoencoder import build_autoencoder
from translate.codec import LatentCodec
from translate.config import Config
from translate.model import build_unet
from translate.pipeline import TranslatorInfo, resolve_vae_dtype


def random_translator(device: torch.device, vae_dtype: str) -> Translator:
    """The default config's UNet and VAE architecture, random weights."""
    cfg = Config()
    own = cfg.vae.own
    vae = build_autoencoder(own, cfg.data.resolution)
    codec = LatentCodec(vae, source="random")
    side = cfg.data.resolution // codec.downsample_factor
    unet = build_unet(cfg.model, side, own.latent_channels)
    info = TranslatorInfo("A", "B", cfg.data.resolution)
    codec.to_dtype(resolve_vae_dtype(vae_dtype, device))
    return Translator(unet, codec, info, device)


def measure(tr: Translator, batch: int, nfes: list[int], repeats: int, device) -> list[dict]:
    """Rows for one batch size: the whole call against its parts, per NFE."""
    res = tr.resolution
    images = [Image.new("RGB", (res, res), (i * 7 % 255, 90, 160)) for i in range(batch)]
    pixels = tr.preprocess(images).to(device)
    latents = tr.codec.encode(pixels)
    t = torch.full((batch,), 0.5, device=device)
    with torch.no_grad():
        encode = timed(lambda: tr.codec.encode(pixels), device, repeats)
        field = tr.velocity_field(latents, "a2b")  # the call's field: with a guide, two UNets
        unet = timed(lambda: field(latents, t), device, repeats)
        decode = timed(lambda: tr.codec.decode(latents), device, repeats)
    rows = []
    for nfe in nfes:
        call = timed(
            lambda n=nfe: tr(images, steps=n, method="euler", batch_size=batch), device, repeats
        )
        parts = encode + nfe * unet + decode
        rows.append(
            {
                "VAE dtype": str(tr.codec.dtype).removeprefix("torch."),
                "batch": batch,
                "NFE": nfe,
                "images/s": batch / call,
                "call ms": call * 1e3,
                "parts ms": parts * 1e3,
                "encode ms": encode * 1e3,
                "UNet ms": unet * 1e3,
                "decode ms": decode * 1e3,
                "overhead": call / parts - 1,
            }
        )
        print(table(rows[-1:], list(rows[-1])).splitlines()[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint")
    parser.add_argument("--nfe", default="1,2,4,8,16")
    parser.add_argument("--batch", default="1,8,32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--vae-dtype", default="auto", help="comma-separated: auto,float32,...")
    parser.add_argument("--out", default="benchmarks/results/inference.json")
    args = parser.parse_args()
    device = pick_device(args.device)
    rows = []
    for vae_dtype in args.vae_dtype.split(","):
        if args.checkpoint:
            tr = Translator.from_pretrained(args.checkpoint, device=device, vae_dtype=vae_dtype)
        else:
            tr = random_translator(device, vae_dtype)
        for batch in map(int, args.batch.split(",")):
            nfes = [int(n) for n in args.nfe.split(",")]
            rows += measure(tr, batch, nfes, args.repeats, device)
    print()
    print(table(rows, list(rows[0])))
    write_json(
        args.out,
        {"machine": machine(device), "checkpoint": args.checkpoint, "rows": rows},
    )


if __name__ == "__main__":
    main()
