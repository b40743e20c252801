"""Where a whole training run's wall time goes, from a py-spy profile of it.

    pip install py-spy
    py-spy record --rate 10 --idle --subprocesses --format raw -o prof.txt -- \\
        accelerate launch --config_file configs/accelerate/local.yaml -q train.py
    python benchmarks/run_profile.py prof.txt [--rate 10]

py-spy's ``raw`` format is one collapsed stack per line (``frame;frame;... count``). This
script keeps the main thread of the ``train.py`` process (the launcher's process and the
background threads of tqdm and the tracker only wait), attributes each sample to the first
stage below whose function is on its stack, and prints seconds and shares per stage, with the
flow's optimizer step split into its parts. ``--idle`` makes waits (disk, locks) count as the
wall time they take. Writes JSON.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from common import table, write_json

# (stage, functions that mark it), first match wins; a frame matches a name that equals its
# function or ends with ".name" (methods are "Class.name" in py-spy's output)
STAGES = (
    ("stage 1: test PSNR", ("evaluate_psnr",)),
    ("stage 1: latent normalisation", ("_normalised_codec",)),
    ("stage 1: loading images", ("_load_pixels",)),
    ("stage 1: steps", ("train_autoencoder",)),
    ("flow: reflow pairs", ("Trainer._reflow_round",)),
    ("flow: sample grids", ("Trainer._sample_grid",)),
    ("flow: states and exports", ("Trainer._save", "Trainer._export_missing")),
    ("flow: guide", ("Trainer._keep_guide",)),
    ("flow: steps", ("Trainer._update",)),
    ("flow: EMA", ("EMAModel.step",)),
    ("flow: rest of the loop", ("Trainer._loop",)),
    ("data: encoding latents", ("encode_files",)),
    ("data: building the data set", ("open_source", "prepare_data")),
    ("flow: setting up", ("Trainer.__init__", "Trainer.fit")),
    ("imports", ("_find_and_load",)),
)
STEP_PARTS = (
    ("rollout (no grad)", ("Trainer._rollout",)),
    ("discriminator update", ("Adversary.update",)),
    ("backward", ("Accelerator.backward",)),
    ("regression forward", ("cfm_step",)),
    ("generator term", ("Trainer._adversarial_step",)),
    ("optimizer and clipping", ("AcceleratedOptimizer.step", "Accelerator.clip_grad_norm_")),
)


def _functions(frames: list[str]) -> list[str]:
    return [frame.split(" (")[0] for frame in frames]


def _match(functions: list[str], groups) -> str | None:
    for name, marks in groups:
        for mark in marks:
            if any(f == mark or f.endswith("." + mark) for f in functions):
                return name
    return None


def attribute(lines, rate: float) -> tuple[dict[str, float], dict[str, float]]:
    """Seconds per stage and per part of the flow's step, from py-spy raw lines."""
    stages, parts = Counter(), Counter()
    for line in lines:
        line = line.strip()
        if not line:
            continue
        stack, count = line.rsplit(" ", 1)
        frames = stack.split(";")
        if len(frames) < 2 or "train.py" not in frames[1] or "Thread._bootstrap" in stack:
            continue  # another process, or a background thread
        functions = _functions(frames)
        stage = _match(functions, STAGES) or "other"
        stages[stage] += int(count)
        if stage == "flow: steps":
            parts[_match(functions, STEP_PARTS) or "other"] += int(count)
    return (
        {k: v / rate for k, v in stages.most_common()},
        {k: v / rate for k, v in parts.most_common()},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path, help="py-spy record --format raw output")
    parser.add_argument("--rate", type=float, default=10.0, help="py-spy's --rate (samples/s)")
    parser.add_argument("--out", default="benchmarks/results/run_profile.json")
    args = parser.parse_args()

    with args.profile.open() as lines:
        stages, parts = attribute(lines, args.rate)
    total = sum(stages.values())
    steps = stages.get("flow: steps", 0.0)
    rows = [{"stage": k, "s": v, "share": v / total} for k, v in stages.items()]
    part_rows = [{"part": k, "s": v, "share": v / max(steps, 1e-9)} for k, v in parts.items()]
    print(f"main thread of train.py: {total:.0f} s ({total / 60:.1f} min)")
    print(table(rows, ["stage", "s", "share"]))
    print(table(part_rows, ["part", "s", "share"]))
    payload = {"args": {**vars(args), "profile": str(args.profile)}, "total_s": total}
    write_json(args.out, {**payload, "stages": rows, "flow_step_parts": part_rows})


if __name__ == "__main__":
    main()
