"""Shared helpers for the benchmark scripts: timing, tables, JSON, machine description."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn`` in seconds (after ``warmup`` untimed calls)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def machine(device: torch.device) -> dict:
    info = {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def table(rows: list[dict], columns: list[str]) -> str:
    """A Markdown table of ``rows`` (dicts) with the given columns."""

    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_json(path: str | Path, payload: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2))
    print(f"wrote {path}")


def add_guidance_option(parser) -> None:
    """``--guidance``: one autoguidance weight for every translation a benchmark makes."""
    parser.add_argument(
        "--guidance",
        type=float,
        default=None,
        help="autoguidance weight (default: the checkpoint's own, per direction; 1: the field "
        "alone)",
    )


def guidance_used(translator, guidance: float | None) -> dict[str, dict[str, float]]:
    """{direction: {"weight", "until"}}: the autoguidance weight that translations asked for
    with ``guidance`` use (None: the checkpoint's own) and the share of the path, from the
    source, that it guides. ValueError for a weight out of range and TranslateError for one
    the checkpoint has no guide for, both before any work."""
    from translate.pipeline import TranslationOptions

    TranslationOptions(guidance=guidance)
    translator.check_guidance(guidance)
    return {
        d: {
            "weight": translator.default_guidance(d) if guidance is None else float(guidance),
            "until": translator.guidance_until(d),
        }
        for d in ("a2b", "b2a")
    }


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def cached_train_latents(folder: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The trainA and trainB latents found in a latent cache folder (e.g. after the default run)."""
    from translate.latent_cache import load_latent_file

    found: dict[str, torch.Tensor] = {}
    for path in sorted(Path(folder).glob("*.safetensors")):
        latent_set = load_latent_file(path)
        domain = latent_set.names[0].split("/")[0] if latent_set.names else ""
        if domain in ("trainA", "trainB"):
            found[domain] = latent_set.latents
    if set(found) != {"trainA", "trainB"}:
        raise SystemExit(f"error: no trainA/trainB latents in {folder}")
    return found["trainA"], found["trainB"]
