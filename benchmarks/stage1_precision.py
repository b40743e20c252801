"""Stage 1's training step in float32 and under bf16 autocast, on this machine.

    python benchmarks/stage1_precision.py [--config configs/default.yaml] [--steps 8] [--warmup 2]

Times the step that ``translate.autoencoder.train_autoencoder`` takes (``stage1_loss``: encode,
posterior sample, decode, L1 + KL; then backward and a clipped AdamW step) for the config's
``vae.own`` VAE at its resolution and batch size, on uniform random images (the speed does not
depend on them), and prints ms/step and the speed-up of bf16 over float32.
``vae.own.mixed_precision=auto`` uses bf16 where the CPU computes it natively; this is the
measurement behind that choice (its effect on the VAE's test PSNR is in docs/PERFORMANCE.md §9).
Writes JSON.
"""

from __future__ import annotations

import argparse
import time

import torch
from common import machine, pick_device, sync, table, write_json

from translate.autoencoder import build_autoencoder, stage1_loss
from translate.config import load_config
from translate.precision import native_bf16_cpu

MODES = ("float32", "bf16 autocast")


def step_time(cfg, device: torch.device, mode: str, steps: int, warmup: int) -> float:
    """Median seconds per stage-1 optimizer step in ``mode``."""
    own = cfg.vae.own
    torch.manual_seed(own.seed)
    vae = build_autoencoder(own, cfg.data.resolution).to(device)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=own.lr)
    size = cfg.data.resolution
    x = torch.rand(own.batch_size, 3, size, size, device=device) * 2 - 1
    times = []
    for _ in range(warmup + steps):
        sync(device)
        start = time.perf_counter()
        loss, _, _ = stage1_loss(vae, x, own.kl_weight, bf16=mode == "bf16 autocast")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        sync(device)
        times.append(time.perf_counter() - start)
    return sorted(times[warmup:])[steps // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="benchmarks/results/stage1_precision.json")
    args = parser.parse_args()

    cfg = load_config(args.config)
    device = pick_device(args.device)
    rows = []
    for mode in MODES:
        seconds = step_time(cfg, device, mode, args.steps, args.warmup)
        rows.append({"mode": mode, "ms/step": seconds * 1000})
    for row in rows:
        row["speed-up"] = rows[0]["ms/step"] / row["ms/step"]
    print(f"stage 1 at {cfg.data.resolution} px, batch {cfg.vae.own.batch_size}, on {device}")
    if device.type == "cpu":
        print(f"native bf16 on this CPU: {native_bf16_cpu()}")
    print(table(rows, ["mode", "ms/step", "speed-up"]))
    payload = {"machine": machine(device), "args": vars(args), "rows": rows}
    write_json(args.out, payload)


if __name__ == "__main__":
    main()
