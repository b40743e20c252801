"""What a stage-1 recipe's codec allows: test PSNR and the sharpness of its reconstructions.

    python benchmarks/codec_ceiling.py vae.own.latent_channels=8 [more key=value overrides]
    python benchmarks/codec_ceiling.py --config configs/default.yaml

Builds (or reuses, from the cache) the VAE that ``train.py`` would use with the same config and
overrides, through the same ``translate.training_data.prepare_codec``; so a stage 1 trained here
is the one a later run with these overrides reads. Then, on each domain's test split:

- ``psnr``: mean PSNR (dB) of decode(encode(y)) against y;
- ``sharpness``: ``translate.metrics.sharpness_ratio`` of decode(encode(y)) against the real y
  (1.0: as much high-frequency power as the real images). This is the ceiling of any flow's
  translations into that domain: a translation is a decoded latent too;
- ``mix sharpness``: the same for decode((z_i + z_j) / 2) of random test pairs, the look of an
  average of two partners;
- ``latent dims``: channels x height x width of one latent, the space the flow works in.

The stage-1 training time is the wall time of ``prepare_codec`` (0 when the VAE was cached).
Result and reading: docs/SHARPNESS.md ("A codec with more latent channels").
"""

from __future__ import annotations

import argparse
import time

import torch
from common import machine, table, write_json

from translate.autoencoder import _as_float, _load_pixels, psnr
from translate.config import load_config
from translate.data import open_source
from translate.metrics import sharpness_ratio
from translate.training_data import prepare_codec


@torch.no_grad()
def domain_row(codec, files, resolution: int, crop, batch: int, seed: int) -> dict:
    """Reconstruction PSNR and sharpness of one domain's test images through ``codec``."""
    real = _as_float(_load_pixels(files, resolution, crop, "test images"))
    latents = torch.cat([codec.encode(x) for x in real.split(batch)])
    recon = torch.cat([codec.decode(z) for z in latents.split(batch)])
    g = torch.Generator().manual_seed(seed)
    other = latents[torch.randperm(len(latents), generator=g)]
    pairs = zip(latents.split(batch), other.split(batch), strict=True)
    mixed = torch.cat([codec.decode((z + o) / 2) for z, o in pairs])
    return {
        "images": len(real),
        "latent dims": "x".join(str(d) for d in latents.shape[1:]),
        "psnr": psnr(recon, real).mean().item(),
        "sharpness": sharpness_ratio(recon, real),
        "mix sharpness": sharpness_ratio(mixed, real),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    parser.add_argument("--config", default=None)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/codec_ceiling.json")
    args = parser.parse_args()

    cfg = load_config(args.config, args.overrides)
    device = torch.device("cpu")
    source = open_source(cfg.data)
    start = time.perf_counter()
    codec, _ = prepare_codec(cfg, source, device)
    seconds = time.perf_counter() - start
    rows = []
    for name, files in zip((source.name_a, source.name_b), source.split("test"), strict=True):
        row = domain_row(codec, files, cfg.data.resolution, source.crop, args.batch, args.seed)
        rows.append({"domain": name, **row})
    print(f"codec: {codec.identity()}  (prepared in {seconds:.0f} s)")
    print(table(rows, ["domain", "images", "latent dims", "psnr", "sharpness", "mix sharpness"]))
    payload = {
        "machine": machine(device),
        "args": vars(args),
        "codec": codec.identity(),
        "prepare_seconds": seconds,
        "rows": rows,
    }
    write_json(args.out, payload)


if __name__ == "__main__":
    main()
