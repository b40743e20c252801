"""Where a step of the full recipe goes: rollout, regression, backward, discriminator update.

    python benchmarks/train_parts.py [--config configs/default.yaml] [--steps 25] \
        [--whole-batch-rollout] [key=value ...]

Runs ``translate.train.main`` on the config (the overrides as ``accelerate launch train.py``
takes them; give ``vae.pretrained=PATH`` of a trained VAE, or stage 1 trains first) for
``--steps`` optimizer steps with the adversarial term on from the first (``adversarial.start=0``,
``ramp=0``; no reflow round, samples or checkpoints), and times each part of every step:

- ``rollout``: the field's own Euler states from real sources (no grad);
- ``regression``: the CFM forward pass, the rolled-out states joined to it;
- ``backward``: the backward pass of the regression and the generator term;
- ``discriminators``: their update (logistic loss, R1, AdamW);
- ``step``: the whole micro-step (``Trainer._update``), the parts and the optimizer.

``--whole-batch-rollout`` times the rollout as it was before it evaluated only the moving rows
(every row at each of max(k) steps, the finished rows masked), for comparison; the SHA-256 of
the final UNet it prints tells whether the two train the same weights. The first ``--warmup``
steps are left out. Prints ms per step; writes JSON.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import statistics
import tempfile
import time
from collections import defaultdict

import accelerate
import torch
from common import machine, table, write_json

import translate.adversarial as adversarial_module
import translate.train as train_module
from translate.config import load_config

PARTS = {
    "rollout": (train_module.Trainer, "_rollout"),
    "regression": (train_module, "cfm_step"),
    "backward": (accelerate.Accelerator, "backward"),
    "discriminators": (adversarial_module.Adversary, "update"),
    "step": (train_module.Trainer, "_update"),
}


def whole_batch_rollout(field, x, t_start, steps, k):
    """The rollout before it skipped finished rows: max(k) evaluations of the whole batch."""
    sign = 1 - 2 * t_start
    t = t_start.clone()
    everyone = torch.arange(len(x), device=x.device)
    shape = (-1,) + (1,) * (x.dim() - 1)
    for j in range(int(k.max()) if k.numel() else 0):
        moving = (k > j).to(x.dtype).reshape(shape)
        x = x + moving * (sign / steps).reshape(shape) * field(x, t, everyone)
        t = t + (k > j).to(t.dtype) * sign / steps
    return x, t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--whole-batch-rollout", action="store_true")
    parser.add_argument("--out", default="benchmarks/results/train_parts.json")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = parser.parse_args()

    times: dict[str, list[float]] = defaultdict(list)
    for name, (owner, attr) in PARTS.items():
        original = getattr(owner, attr)

        def timed(*a, _original=original, _name=name, **kw):
            start = time.perf_counter()
            result = _original(*a, **kw)
            times[_name].append(time.perf_counter() - start)
            return result

        setattr(owner, attr, functools.wraps(original)(timed))
    if args.whole_batch_rollout:
        train_module.rollout_states = whole_batch_rollout

    with tempfile.TemporaryDirectory() as out:
        timing = [
            f"train.steps={args.steps}",
            "adversarial.start=0",
            "adversarial.ramp=0",
            "reflow.share=0",
            f"train.sample_every={args.steps + 1}",
            f"train.checkpoint_every={args.steps + 1}",
            "train.log_with=none",
            f"train.output_dir={out}",
        ]
        cfg = load_config(args.config, [*args.overrides, *timing])
        final = train_module.main(cfg)
        weights = final / "unet" / "diffusion_pytorch_model.safetensors"
        unet_sha256 = hashlib.sha256(weights.read_bytes()).hexdigest()

    rows = []
    for name in PARTS:
        kept = times[name][args.warmup :]
        rows.append({"part": name, "ms/step": 1000 * statistics.mean(kept), "steps": len(kept)})
    rollout = "whole batch" if args.whole_batch_rollout else "moving rows"
    print(f"{args.config} {' '.join(args.overrides)} (rollout: {rollout}), on cpu")
    print(table(rows, ["part", "ms/step", "steps"]))
    print(f"final UNet sha256: {unet_sha256}")
    payload = {"machine": machine(torch.device("cpu")), "rollout": rollout, "rows": rows}
    write_json(args.out, {**payload, "unet_sha256": unet_sha256, **vars(args)})


if __name__ == "__main__":
    main()
