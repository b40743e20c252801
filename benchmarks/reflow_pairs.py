"""What a reflow round's pairs cost, in float32 and under bf16 autocast, and how far apart they are.

    python benchmarks/reflow_pairs.py --checkpoint runs/emoji/checkpoint-final [--count 512] \
        [--nfe 4] [--batch 256]

At a reflow round's first step the trainer translates every training latent with the EMA field
in ``reflow.nfe`` Euler steps, unguided (``translate.reflow.generate_pairs``), in the run's
autocast. This times the same translation of ``--count`` latents (standard normal, seeded,
about as spread as real ones; one untimed warm-up batch per precision) A -> B in float32 and
under CPU bf16 autocast, and reports the
latents per second and the bf16 pairs' distance from the float32 ones (max and mean |diff|,
and the latents' own standard deviation for scale). Result: docs/PERFORMANCE.md §11.
"""

from __future__ import annotations

import argparse
import time

import torch
from common import machine, table, write_json

from translate import Translator
from translate.reflow import translate_all


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--count", type=int, default=512)
    parser.add_argument("--nfe", type=int, default=4)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--out", default="benchmarks/results/reflow_pairs.json")
    args = parser.parse_args()

    tr = Translator.from_pretrained(args.checkpoint, device="cpu")
    shape = (tr.unet.config.out_channels, tr.unet.config.sample_size, tr.unet.config.sample_size)
    latents = torch.randn(args.count, *shape, generator=torch.Generator().manual_seed(0))

    def translate(x: torch.Tensor, direction: str) -> torch.Tensor:
        return tr.translate_latents(x, direction, args.nfe, "euler", guidance=1).x

    rows, outputs = [], {}
    for name, bf16 in (("float32", False), ("bf16 autocast", True)):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):  # untimed warm-up
            translate_all(translate, latents[: args.batch], "a2b", "cpu", args.batch)
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            outputs[name] = translate_all(translate, latents, "a2b", "cpu", args.batch)
        seconds = time.perf_counter() - start
        diff = (outputs[name] - outputs["float32"]).abs()
        rows.append(
            {
                "precision": name,
                "seconds": seconds,
                "latents/s": args.count / seconds,
                "max |diff|": diff.max().item(),
                "mean |diff|": diff.mean().item(),
                "latent std": outputs["float32"].std().item(),
            }
        )
    print(table(rows, list(rows[0])))
    payload = {"machine": machine(torch.device("cpu")), "args": vars(args), "rows": rows}
    write_json(args.out, payload)


if __name__ == "__main__":
    main()
