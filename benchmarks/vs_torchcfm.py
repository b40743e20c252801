"""Our OT-CFM training step against a loop built on torchcfm, side by side in one run.

    pip install torchcfm --no-deps    # a benchmark dependency only
    python benchmarks/vs_torchcfm.py [--config configs/default.yaml] [--steps 30] [--batch N]

Both loops train the same UNet (same initial weights) on the same random latents with the same
batch size and AdamW settings, for the same number of steps, alternating in rounds so that
machine noise hits both alike:
- ours: the trainer's step (``PairStream`` with the exact coupler, overlapped on CUDA and
  serial on a CPU as in training, then ``flow_step``);
- torchcfm: ``ExactOptimalTransportConditionalFlowMatcher``'s OT sampling (a plan from
  ``ot.emd``, then pairs drawn from it) and its ``x_t``/``u_t``, with the same UNet adapter.
Reports steps/s of each and their ratio, the mean paired cost (over the mean cost of random
pairs) and the duplicate-pair rate (pairs that repeat an earlier pair of the same batch).
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from common import cached_train_latents, machine, pick_device, sync, table, write_json
from train_step import Setup

from translate.config import load_config
from translate.coupling import ExactOTCoupler, pairwise_cost
from translate.flow import cfm_loss
from translate.model import velocity


def duplicate_rate(rows: torch.Tensor, cols: torch.Tensor) -> float:
    pairs = set(zip(rows.tolist(), cols.tolist(), strict=True))
    return 1 - len(pairs) / len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--batch", type=int)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--latents",
        help="a latent cache folder (e.g. .cache/translate/latents): real train latents, so "
        "that paired costs mean something; default: random latents of the config's shape",
    )
    parser.add_argument("--out", default="benchmarks/results/vs_torchcfm.json")
    args = parser.parse_args()
    try:
        from torchcfm.conditional_flow_matching import (
            ConditionalFlowMatcher,
            ExactOptimalTransportConditionalFlowMatcher,
        )
    except ImportError:
        raise SystemExit("error: pip install torchcfm --no-deps (a benchmark dependency)") from None

    device = pick_device(args.device)
    cfg = load_config(args.config)
    batch = args.batch or cfg.train.batch_size
    latents = cached_train_latents(args.latents) if args.latents else None
    ours = Setup(cfg, batch, device, latents=latents)
    theirs = Setup(cfg, batch, device, latents=latents)
    theirs.unet.load_state_dict(copy.deepcopy(ours.unet.state_dict()))
    overlap = device.type == "cuda"  # the trainer's default (train.overlap_coupling: null)
    stream, gens = ours.stream(ExactOTCoupler(cfg.flow.cost_resolution), overlap=overlap)
    matcher = ExactOptimalTransportConditionalFlowMatcher(sigma=cfg.flow.sigma)
    g = torch.Generator().manual_seed(2)

    def our_step() -> float:
        pairing = stream.next()
        ours.update(pairing, gens)
        return pairing.cost_ratio

    stats = {"ours": [], "torchcfm": []}
    duplicates = {"ours": [], "torchcfm": []}

    def their_step() -> None:
        ia = torch.randint(len(theirs.latents_a), (batch,), generator=g).to(device)
        ib = torch.randint(len(theirs.latents_b), (batch,), generator=g).to(device)
        x0, x1 = theirs.latents_a[ia], theirs.latents_b[ib]
        # what ExactOptimalTransportConditionalFlowMatcher.sample_location_and_conditional_flow
        # does, with the drawn indices kept for the statistics
        plan = matcher.ot_sampler.get_map(x0, x1)
        i, j = matcher.ot_sampler.sample_map(plan, batch, replace=True)
        t, xt, ut = ConditionalFlowMatcher.sample_location_and_conditional_flow(
            matcher, x0[i], x1[j]
        )
        loss = cfm_loss(velocity(theirs.unet, xt, t), ut)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(theirs.unet.parameters(), 1.0)
        theirs.optimizer.step()
        theirs.optimizer.zero_grad(set_to_none=True)
        cost = pairwise_cost(x0, x1)
        rows, cols = torch.as_tensor(i), torch.as_tensor(j)
        stats["torchcfm"].append((cost[rows, cols].mean() / cost.mean()).item())
        duplicates["torchcfm"].append(duplicate_rate(rows, cols))

    seconds = {"ours": 0.0, "torchcfm": 0.0}
    try:
        our_step(), their_step()  # warm-up
        for _ in range(args.rounds):
            for name, step in (("ours", our_step), ("torchcfm", their_step)):
                sync(device)
                start = time.perf_counter()
                for _ in range(args.steps):
                    ratio = step()
                    if name == "ours":
                        stats["ours"].append(ratio)
                        duplicates["ours"].append(0.0)  # a permutation: checked below
                sync(device)
                seconds[name] += time.perf_counter() - start
    finally:
        stream.close()
    # our pairs are a permutation by construction; verify on one fresh batch
    x0, x1 = ours.latents_a[:batch], ours.latents_b[:batch]
    _, cols = ExactOTCoupler().match(pairwise_cost(x0, x1).cpu().numpy(), None)
    assert len(set(cols.tolist())) == batch
    total = args.steps * args.rounds
    rows = [
        {
            "loop": name,
            "steps/s": total / seconds[name],
            "samples/s": total * batch / seconds[name],
            "paired cost / random": sum(stats[name]) / len(stats[name]),
            "duplicate-pair rate": sum(duplicates[name]) / len(duplicates[name]),
        }
        for name in ("ours", "torchcfm")
    ]
    ratio = rows[0]["steps/s"] / rows[1]["steps/s"]
    print(table(rows, list(rows[0])))
    print(f"\nsteps/s ratio, ours / torchcfm: {ratio:.3f}  (batch {batch}, {total} steps each)")
    write_json(
        args.out,
        {
            "machine": machine(device),
            "config": args.config,
            "latents": args.latents or "random",
            "batch": batch,
            "steps": total,
            "rows": rows,
            "ratio": ratio,
        },
    )


if __name__ == "__main__":
    main()
