"""The benchmark scripts run end to end on tiny settings and write their JSON (no timings are
asserted: speed belongs in the printed tables, not in tests)."""

import importlib.util
import json
import subprocess
import sys

import pytest


def _run(repo, tmp_path, script, *args):
    out = tmp_path / f"{script}.json"
    result = subprocess.run(
        [sys.executable, str(repo / "benchmarks" / f"{script}.py"), *args, "--out", str(out)],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(out.read_text())


def test_coupling(repo, tmp_path):
    args = ["--sizes", "16", "--shapes", "4x4x4", "--repeats", "1"]
    result = _run(repo, tmp_path, "coupling", *args)
    (row,) = result["rows"]
    assert {"exact (ot.emd) ms", "hungarian (scipy) ms", "sinkhorn ms"} <= set(row)


def test_train_step(repo, tmp_path):
    result = _run(repo, tmp_path, "train_step", "--config", "configs/tiny.yaml", "--steps", "2")
    (row,) = result["rows"]
    assert row["batch"] == 8 and 0 <= row["coupling share of serial step"] < 1


def test_inference(repo, tmp_path):
    args = ["--nfe", "1,2", "--batch", "2", "--repeats", "1", "--vae-dtype", "float32,bfloat16"]
    result = _run(repo, tmp_path, "inference", *args)
    assert [r["NFE"] for r in result["rows"]] == [1, 2, 1, 2]
    assert [r["VAE dtype"] for r in result["rows"]] == ["float32"] * 2 + ["bfloat16"] * 2


@pytest.mark.skipif(importlib.util.find_spec("torchcfm") is None, reason="pip install torchcfm")
def test_vs_torchcfm(repo, tmp_path):
    args = ["--config", "configs/tiny.yaml", "--steps", "2", "--rounds", "1"]
    result = _run(repo, tmp_path, "vs_torchcfm", *args)
    ours, theirs = result["rows"]
    assert ours["duplicate-pair rate"] == 0.0
    assert ours["paired cost / random"] < 1.0
    assert theirs["loop"] == "torchcfm" and result["ratio"] > 0


def test_train_options(repo, tmp_path):
    options = "plain,channels_last,fused AdamW,bf16 autocast"  # compile is too slow for a test
    args = ["--config", "configs/tiny.yaml", "--steps", "1", "--warmup", "1", "--options", options]
    result = _run(repo, tmp_path, "train_options", *args)
    assert [r["option"] for r in result["rows"]] == options.split(",")
    assert result["rows"][0]["speed-up"] == 1.0
