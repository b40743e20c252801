"""Two CPU processes under torchrun (a real gloo process group)."""

import json
from pathlib import Path

import pytest
from helpers import torchrun

from translate import runs

HERE = Path(__file__).parent


@pytest.mark.slow
def test_global_scope_gives_one_plan_on_both_ranks(tmp_path):
    result = torchrun(HERE / "dist_global_coupling.py", tmp_path / "out.json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["world"] == 2 and out["all_ok"] and out["ratio"] < 1.0


@pytest.mark.slow
def test_two_process_training_run(tmp_path, folders, tiny_vae, repo):
    result = torchrun(
        repo / "train.py",
        "--config",
        repo / "configs" / "tiny.yaml",
        f"data.root={folders}",
        f"vae.pretrained={tiny_vae}",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"train.output_dir={tmp_path / 'run'}",
        "flow.scope=global",
        "train.log_with=none",
        "train.steps=4",
        "train.checkpoint_every=2",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert runs.finished_step(tmp_path / "run") == 4
    state = runs.latest_state(tmp_path / "run")
    assert {p.name for p in state.glob("generators_*.safetensors")} == {
        "generators_0.safetensors",
        "generators_1.safetensors",
    }
