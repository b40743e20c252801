"""Probe: autoguidance on part of the path only (a guidance interval), at inference.

    python benchmarks/guidance_interval.py --checkpoint runs/emoji/checkpoint-final \
        --guidance 2 --intervals 0:1,0:0.5,0.25:0.75 --nfe 4 --out eval/exp-interval

Kynkäänniemi et al. (NeurIPS 2024, "Applying guidance in a limited interval improves sample and
distribution quality in diffusion models") guide only in the middle of the noise levels. Here a
translation's progress along its path is s = t for A -> B and s = 1 - t for B -> A (0 at the
source, 1 at the target), and a variant ``lo:hi`` evaluates the field with the autoguidance
weight ``--guidance`` where lo <= s < hi and with the field alone (weight 1) elsewhere; with 4
Euler steps the steps start at s = 0, 0.25, 0.5 and 0.75. ``0:1`` is plain guidance on the whole
path, and an empty interval such as ``0:0`` the field alone. The checkpoint needs a guide
(``benchmarks/attach_guide.py`` gives an older one its earlier checkpoint as a guide). Each
variant is scored by ``translate.evaluate`` on the held-out split, as ``translate-eval
--compare`` would; a guided step counts as one NFE, as in ``translate-eval``.
Hypothesis and result: docs/SHARPNESS.md ("Guidance on part of the path").
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
from pathlib import Path

import translate.evaluate as evaluate_module
from translate import Translator
from translate.config import config_from_dict
from translate.evaluate import EvalOptions, evaluate
from translate.flow import SourceCondition
from translate.report import write_report

EPS = 1e-6  # the solvers' times are floats: an interval's ends are compared with this slack


def with_interval(tr: Translator, lo: float, hi: float) -> Translator:
    """A shallow copy of ``tr`` whose guided fields use their weight only for lo <= s < hi
    (its own ``guidance_until`` is dropped, so the report does not name it)."""
    out = copy.copy(tr)
    out.info = dataclasses.replace(tr.info, guidance_until={})

    def velocity_field(sources, direction: str, guidance: float | None = None):
        condition = None
        if out.info.source_condition:
            condition = SourceCondition.of(sources, direction == "b2a")
        weight = out.default_guidance(direction) if guidance is None else guidance

        def field(x, t):
            s = t if direction == "a2b" else 1 - t
            inside = bool(((s >= lo - EPS) & (s < hi - EPS)).all())
            return out.field(x, t, condition, weight if inside else 1.0)

        return field

    out.velocity_field = velocity_field
    return out


def parse_intervals(text: str) -> list[tuple[float, float]]:
    """``"0:1,0.25:0.75"`` -> [(0.0, 1.0), (0.25, 0.75)]; SystemExit for a malformed one."""
    intervals = []
    for item in text.split(","):
        try:
            lo, hi = (float(v) for v in item.split(":"))
        except ValueError:
            raise SystemExit(f"error: an interval is lo:hi, got {item!r}") from None
        if not 0 <= lo <= hi <= 1:
            raise SystemExit(f"error: an interval needs 0 <= lo <= hi <= 1, got {item!r}")
        intervals.append((lo, hi))
    return intervals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="a checkpoint with a guide")
    parser.add_argument("--guidance", type=float, default=2.0, help="the weight inside")
    parser.add_argument("--intervals", default="0:1,0:0.5,0.25:0.75", help="lo:hi,...")
    parser.add_argument("--nfe", default="4", help="Euler steps, comma-separated")
    parser.add_argument("--limit", type=int, default=None, help="test images per domain")
    parser.add_argument("--out", type=Path, required=True, help="the evaluation's folder")
    parser.add_argument("--data-root", help="the data's folder (default: the checkpoint's)")
    args = parser.parse_args()
    intervals = parse_intervals(args.intervals)
    tr = Translator.from_pretrained(args.checkpoint, device="cpu")
    tr.check_guidance(args.guidance)
    models = {f"s{lo:g}-{hi:g}": with_interval(tr, lo, hi) for lo, hi in intervals}
    evaluate_module._load_translators = lambda checkpoints, device: list(models.values())
    steps = tuple(int(n) for n in args.nfe.split(","))
    opts = EvalOptions(
        out=args.out, steps=steps, limit=args.limit, device="cpu", guidance=args.guidance
    )
    data = config_from_dict(tr.info.config).data
    if args.data_root:
        data = dataclasses.replace(data, source="folders", root=args.data_root)
    outcome = evaluate([Path(name) for name in models], opts, data)
    command = "benchmarks/guidance_interval.py " + " ".join(sys.argv[1:])
    files = write_report(outcome, args.out, command)
    print(f"wrote {files['report']}")


if __name__ == "__main__":
    main()
