"""How closely does a checkpoint reach the true counterparts, on training pairs and held-out ones?

    python benchmarks/paired_fit.py runs/exp-oracle/checkpoint-final \
        --data .cache/translate/emoji-om17.0.0-tw2.0.0-v2 --nfe 1,4 --count 400

Needs a data set whose ``train`` and ``test`` splits hold the same item under the same file
name in both domains (``pairing_accuracy.paired_files``). For each checkpoint, split and step
count it translates the first ``--count`` paired A images to B in Euler steps and reports:

- ``latent error``: mean |ẑ_B - z_B|² over mean |z_A - z_B|² (0: the counterpart's latent; 1:
  no closer than the untranslated source);
- ``PSNR``: of the decoded translation against the real counterpart image, in dB.

A field trained on the true pairs (``flow.scope=paired``) that reaches its training pairs no
better than held-out ones is under-fitted, not over-fitted: more fitting (steps, width) is
what it lacks, not data. Result and reading: docs/SHARPNESS.md ("Is the field under-fitted?").
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from common import table, write_json
from pairing_accuracy import paired_files

from translate import Translator
from translate.autoencoder import _as_float, _load_pixels, psnr


@torch.no_grad()
def fit_rows(checkpoint: str, data: Path, nfe: list[int], count: int) -> list[dict]:
    """One row per split and step count for ``checkpoint``."""
    tr = Translator.from_pretrained(checkpoint)
    rows = []
    for split in ("train", "test"):
        files_a, files_b = (f[:count] for f in paired_files(data, split))
        a = _as_float(_load_pixels(files_a, tr.resolution, None, f"{split} A"))
        b = _as_float(_load_pixels(files_b, tr.resolution, None, f"{split} B"))
        z_a, z_b = tr.codec.encode(a), tr.codec.encode(b)
        identity = (z_a - z_b).pow(2).mean()
        for steps in nfe:
            z = tr.translate_latents(z_a, "a2b", steps, "euler", guidance=1).x  # the field alone
            rows.append(
                {
                    "checkpoint": checkpoint,
                    "split": split,
                    "pairs": len(a),
                    "NFE": steps,
                    "latent error": float((z - z_b).pow(2).mean() / identity),
                    "PSNR": psnr(tr.codec.decode(z), b).mean().item(),
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--nfe", default="1,4")
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--out", default="benchmarks/results/paired_fit.json")
    args = parser.parse_args()

    nfe = [int(n) for n in args.nfe.split(",")]
    rows = [row for ck in args.checkpoints for row in fit_rows(ck, args.data, nfe, args.count)]
    print(table(rows, ["checkpoint", "split", "pairs", "NFE", "latent error", "PSNR"]))
    settings = {key: str(value) for key, value in vars(args).items()}
    write_json(args.out, {"args": settings, "rows": rows})


if __name__ == "__main__":
    main()
