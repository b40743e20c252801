"""Time per batch of each minibatch coupling: independent, exact (ot.emd), Hungarian, sinkhorn.

    python benchmarks/coupling.py [--sizes 64,128,256,512,1024] [--shapes 4x8x8,4x16x16,...]

The cost matrix is computed with torch on the device (included in the time); the plan on the
CPU. Prints a table and writes JSON (default benchmarks/results/coupling.json).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from common import machine, pick_device, table, timed, write_json
from scipy.optimize import linear_sum_assignment

from translate.coupling import (
    Coupler,
    ExactOTCoupler,
    IndependentCoupler,
    SinkhornCoupler,
    pairwise_cost,
)


class HungarianCoupler(Coupler):
    """The same assignment as exact OT, from scipy's Hungarian solver (for comparison)."""

    def match(self, cost: np.ndarray, generator: torch.Generator):
        return linear_sum_assignment(cost)


METHODS = {
    "independent": IndependentCoupler(),
    "exact (ot.emd)": ExactOTCoupler(),
    "hungarian (scipy)": HungarianCoupler(),
    "sinkhorn": SinkhornCoupler(0.05),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64,128,256,512,1024")
    parser.add_argument("--shapes", default="4x8x8,4x16x16,4x32x32,4x64x64")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="benchmarks/results/coupling.json")
    args = parser.parse_args()
    device = pick_device(args.device)
    g = torch.Generator().manual_seed(0)
    rows = []
    for shape_text in args.shapes.split(","):
        shape = tuple(int(s) for s in shape_text.split("x"))
        for n in map(int, args.sizes.split(",")):
            x0 = torch.randn(n, *shape, generator=g).to(device)
            x1 = torch.randn(n, *shape, generator=g).to(device)
            cost_s = timed(lambda x0=x0, x1=x1: pairwise_cost(x0, x1).cpu(), device, args.repeats)
            row = {"latent": shape_text, "batch": n, "cost matrix ms": cost_s * 1e3}
            for name, coupler in METHODS.items():
                gen = torch.Generator().manual_seed(0)
                seconds = timed(
                    lambda c=coupler, x0=x0, x1=x1, gen=gen: c(x0, x1, gen), device, args.repeats
                )
                row[f"{name} ms"] = seconds * 1e3
            rows.append(row)
            print(table([row], list(row)).splitlines()[-1], flush=True)
    columns = list(rows[0])
    print()
    print(table(rows, columns))
    write_json(args.out, {"machine": machine(device), "rows": rows})


if __name__ == "__main__":
    main()
