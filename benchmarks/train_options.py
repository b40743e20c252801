"""Which training speed options help on this device: each one alone against the plain step.

    python benchmarks/train_options.py [--config configs/default.yaml] [--batch N] [--steps 10]

Options: ``channels_last`` (UNet weights in NHWC), ``fused AdamW``, ``bf16 autocast`` (what
``accelerate launch --mixed_precision bf16`` does) and ``torch.compile`` of the UNet (what
``accelerate launch --dynamo_backend inductor`` does). Each is timed on the same model, data and
independent pairs (so only the UNet step is measured); compile time is excluded by warm-up
steps. Prints steps/s and the speed-up over the plain step; writes JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch
from common import machine, pick_device, sync, table, write_json
from train_step import Setup

from translate.config import load_config
from translate.coupling import IndependentCoupler

OPTIONS = ("plain", "channels_last", "fused AdamW", "bf16 autocast", "torch.compile")


def options_supported(device: torch.device) -> list[str]:
    """bf16 autocast needs a GPU with bf16 or a CPU (where torch emulates it if needed)."""
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return [o for o in OPTIONS if o != "bf16 autocast"]
    return list(OPTIONS)


def step_time(cfg, batch: int, device: torch.device, option: str, steps: int, warmup: int) -> float:
    """Seconds per optimizer step with one option on."""
    setup = Setup(cfg, batch, device)
    if option == "channels_last":
        setup.unet.to(memory_format=torch.channels_last)
    if option == "fused AdamW":
        setup.optimizer = torch.optim.AdamW(setup.unet.parameters(), lr=cfg.train.lr, fused=True)
    if option == "torch.compile":
        setup.unet = torch.compile(setup.unet)
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16)
        if option == "bf16 autocast"
        else contextlib.nullcontext()
    )
    stream, gens = setup.stream(IndependentCoupler(), overlap=False)
    try:
        for step in range(warmup + steps):
            if step == warmup:
                sync(device)
                start = time.perf_counter()
            with autocast:
                setup.update(stream.next(), gens)
        sync(device)
        return (time.perf_counter() - start) / steps
    finally:
        stream.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--batch", type=int, help="override train.batch_size")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps (compilation)")
    parser.add_argument("--options", default=",".join(OPTIONS), help="comma-separated subset")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="benchmarks/results/train_options.json")
    args = parser.parse_args()
    device = pick_device(args.device)
    cfg = load_config(args.config)
    batch = args.batch or cfg.train.batch_size
    wanted = [o for o in args.options.split(",") if o in options_supported(device)]
    if "plain" not in wanted:
        wanted.insert(0, "plain")
    rows = []
    for option in wanted:
        seconds = step_time(cfg, batch, device, option, args.steps, args.warmup)
        rows.append({"option": option, "steps/s": 1 / seconds, "ms/step": seconds * 1e3})
        print(table(rows[-1:], list(rows[-1])).splitlines()[-1], flush=True)
    plain = rows[0]["ms/step"]
    for row in rows:
        row["speed-up"] = plain / row["ms/step"]
    print()
    print(table(rows, list(rows[0])))
    write_json(
        args.out,
        {"machine": machine(device), "config": args.config, "batch": batch, "rows": rows},
    )


if __name__ == "__main__":
    main()
