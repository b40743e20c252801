"""The run folder: where states, exported checkpoints and sample grids live, and rotation.

output_dir/
  config.yaml              the resolved config of the run
  state/step-000500/       accelerate state + EMA + step and generators (resume points)
  checkpoint-000500/       exported Translator checkpoints (load with one call)
  checkpoint-final/
  guide/unet/              the EMA field kept at guidance.at of the run (autoguidance)
  samples/step-000500.png  sample grids
  logs/                    tracker logs (tensorboard by default)
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from translate import atomic

STATE = "state"
GUIDE = "guide"
FINAL = "checkpoint-final"
_STEP = re.compile(r"^(?:step|checkpoint)-(\d+)$")


def step_name(prefix: str, step: int) -> str:
    return f"{prefix}-{step:06d}"


def numbered(folder: Path, prefix: str) -> list[tuple[int, Path]]:
    """Finished ``prefix-NNNNNN`` folders under ``folder``, oldest first (temporaries ignored)."""
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _STEP.match(path.name)
        if match and path.name.startswith(prefix + "-") and path.is_dir():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_state(run_dir: Path) -> Path | None:
    """The newest complete resume point of a run, if any."""
    states = [
        p for _, p in numbered(run_dir / STATE, "step") if (p / "trainer_state.json").is_file()
    ]
    return states[-1] if states else None


def finished_step(run_dir: Path) -> int | None:
    """The step recorded in ``checkpoint-final``, or None when the run has not finished."""
    info = run_dir / FINAL / "translator.json"
    if not info.is_file():
        return None
    return int(json.loads(info.read_text()).get("step", 0))


def rotate(folder: Path, prefix: str, keep: int) -> None:
    """Delete all but the newest ``keep`` numbered folders.

    Each is first renamed to ``.old-<name>`` (atomic), then deleted: a kill mid-deletion leaves
    a temporary that ``clean_temporaries`` removes, never a half-deleted folder under its name.
    """
    for _, path in numbered(folder, prefix)[:-keep]:
        doomed = path.with_name(f"{atomic.OLD}{path.name}")
        shutil.rmtree(doomed, ignore_errors=True)
        os.replace(path, doomed)
        shutil.rmtree(doomed, ignore_errors=True)


def clean_temporaries(folder: Path) -> None:
    """Remove leftovers of interrupted writes (``.tmp-*`` and ``.old-*``)."""
    atomic.clean_temporaries(folder)


def where_next(run_dir: Path, step: int) -> str:
    """Lines that point a user from a finished run to its samples and the next commands."""
    final = run_dir / FINAL
    grid = run_dir / "samples" / f"{step_name('step', step)}.png"
    return (
        f"samples: {grid}\n"
        f"next: translate-folder {final} INPUT_DIR OUTPUT_DIR  |  "
        f"translate-app --checkpoint {final}  |  translate-eval {final}"
    )


def save_module_state(folder: Path, module, optimizer, weights: str, opt_state: str) -> None:
    """A training-only module (discriminators, feature nets) and its optimizer into ``folder``:
    the weights as safetensors, the optimizer state as a tensor-only torch file."""
    import torch
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(module.state_dict(), str(folder / weights))
    torch.save(optimizer.state_dict(), folder / opt_state)


def load_module_state(folder: Path, module, optimizer, weights: str, opt_state: str) -> None:
    """Restore ``save_module_state``'s folder onto the module's device (the optimizer state with
    ``weights_only=True``). Raises FileNotFoundError when a file is missing."""
    import torch
    from safetensors.torch import load_file

    folder = Path(folder)
    device = next(module.parameters()).device
    module.load_state_dict(load_file(str(folder / weights), device=str(device)))
    optimizer.load_state_dict(
        torch.load(folder / opt_state, map_location=device, weights_only=True)
    )
