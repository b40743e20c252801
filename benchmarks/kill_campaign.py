"""kill -9 campaign: a tiny training run, killed again and again, must always finish whole.

    python benchmarks/kill_campaign.py --kills 24 --seed 0

A tiny run (generated shapes, a random tiny VAE, ``configs/tiny.yaml``, 24 steps, a state and
a checkpoint every 3 steps, one kept, so every save also rotates) is started with
``accelerate launch`` and killed with SIGKILL (the launcher and the trainer together) at:

- ``random``: a uniformly random moment of the process's life (start-up included);
- ``mid-save``: as soon as a state is being written (a ``state/.tmp-*`` folder exists);
- ``rotation``: as soon as an old state or checkpoint is being deleted (an ``.old-*`` folder);
- ``last-state``: as soon as the last state exists, before ``checkpoint-final`` is exported.

After each kill every folder under a final name (``checkpoint-*``) must load, and the same
command is run again. When a run finishes, its ``checkpoint-final`` must be byte-identical to
the one of an uninterrupted run; the run folder is then removed and a new round starts.
Exit status 0 when every check held, 1 otherwise; a table of kills by kind is printed.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from helpers import make_folders, save_tiny_vae  # noqa: E402

from translate import Translator, runs  # noqa: E402

STEPS = 24
KINDS = ("random", "mid-save", "rotation", "last-state")


def command(work: Path, run: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        "1",
        str(REPO / "train.py"),
        "--config",
        str(REPO / "configs" / "tiny.yaml"),
        f"data.root={work / 'data'}",
        f"vae.pretrained={work / 'vae'}",
        f"data.cache_dir={work / 'cache'}",
        f"train.output_dir={run}",
        "train.log_with=none",
        f"train.steps={STEPS}",
        "train.checkpoint_every=3",
        "train.sample_every=12",
        "train.keep_checkpoints=1",
    ]


def triggered(kind: str, run: Path) -> bool:
    """Whether the moment a targeted kill waits for has come."""
    states = run / runs.STATE
    if kind == "mid-save":
        return states.is_dir() and any(p.name.startswith(".tmp-") for p in states.iterdir())
    if kind == "rotation":
        folders = [run, states]
        return any(
            f.is_dir() and any(p.name.startswith(".old-") for p in f.iterdir()) for f in folders
        )
    if kind == "last-state":
        last = states / runs.step_name("step", STEPS)
        return (last / "trainer_state.json").is_file() and runs.finished_step(run) is None
    return False


def launch_and_kill(cmd: list[str], kind: str, run: Path, rng: random.Random) -> bool:
    """Start the run and kill it at the kind's moment; True if it was killed, False if it
    ended first (the return code must then be 0)."""
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + (rng.uniform(0.5, 20.0) if kind == "random" else 300)
    while proc.poll() is None:
        if time.monotonic() >= deadline or triggered(kind, run):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.01)
    if proc.returncode != 0:
        raise RuntimeError(f"the run failed with exit status {proc.returncode}")
    return False


def loadable_exports(run: Path) -> list[str]:
    """Problems with the folders under final names: each must load as a Translator."""
    problems = []
    for _, folder in [*runs.numbered(run, "checkpoint"), (0, run / runs.FINAL)]:
        if folder.exists():
            try:
                Translator.from_pretrained(folder, device="cpu")
            except Exception as err:
                problems.append(f"{folder.name}: {type(err).__name__}: {err}")
    return problems


def final_bytes(run: Path) -> bytes:
    return (run / runs.FINAL / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=24, help="SIGKILLs in all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", help="keep the files here (default: a temporary folder)")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="kill-campaign-"))
    make_folders(work / "data")
    save_tiny_vae(work / "vae")
    rng = random.Random(args.seed)

    reference = work / "reference"
    subprocess.run(command(work, reference), check=True, capture_output=True)
    expected = final_bytes(reference)

    run = work / "run"
    kills = dict.fromkeys(KINDS, 0)
    rounds, failures, launches = 0, [], 0
    while sum(kills.values()) < args.kills:
        kind = KINDS[sum(kills.values()) % len(KINDS)] if rng.random() < 0.5 else "random"
        launches += 1
        if launch_and_kill(command(work, run), kind, run, rng):
            kills[kind] += 1
            failures += [f"after a {kind} kill: {p}" for p in loadable_exports(run)]
            continue
        rounds += 1  # the run finished: it must equal the uninterrupted one
        if final_bytes(run) != expected:
            failures.append(f"round {rounds}: checkpoint-final differs from the reference")
        shutil.rmtree(run)
    # the last killed run, finished
    subprocess.run(command(work, run), check=True, capture_output=True)
    rounds += 1
    if final_bytes(run) != expected:
        failures.append(f"round {rounds}: checkpoint-final differs from the reference")
    failures += loadable_exports(run)

    print("| kill moment | kills |\n|---|---|")
    for kind, count in kills.items():
        print(f"| {kind} | {count} |")
    print(
        f"\n{sum(kills.values())} kills over {launches} launches and {rounds} finished runs; "
        f"every finished checkpoint-final byte-identical to the uninterrupted run: "
        f"{'yes' if not failures else 'NO'}"
    )
    for failure in failures:
        print(f"FAILED: {failure}")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
