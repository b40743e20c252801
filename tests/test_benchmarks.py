"""The benchmark scripts run end to end on tiny settings and write their JSON (no timings are
asserted: speed belongs in the printed tables, not in tests)."""

import importlib.util
import json
import subprocess
import sys

import pytest
import torch


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


def test_stage1_precision(repo, tmp_path):
    args = ["--config", "configs/tiny.yaml", "--steps", "1", "--warmup", "0"]
    result = _run(repo, tmp_path, "stage1_precision", *args)
    assert [r["mode"] for r in result["rows"]] == ["float32", "bf16 autocast"]
    assert result["rows"][0]["speed-up"] == 1.0 and result["rows"][1]["ms/step"] > 0


def test_decoder_gan(repo, tmp_path, tiny_vae, folders):
    """The copy keeps the encoder (so the latent space and the field stay valid) and the UNet,
    and only the decoder moves."""
    from helpers import tiny_translator
    from safetensors.torch import load_file

    tiny_translator(tiny_vae).save_pretrained(tmp_path / "ckpt")
    args = ["--checkpoint", str(tmp_path / "ckpt"), "--data", str(folders), "--to"]
    args += [str(tmp_path / "copy"), "--steps", "2", "--batch", "4", "--latent-noise", "0.3"]
    result = _run(repo, tmp_path, "decoder_gan", *args)
    assert [r["step"] for r in result["rows"]] == [0, 1]
    weights = {
        name: load_file(str(tmp_path / name / "vae" / "diffusion_pytorch_model.safetensors"))
        for name in ("ckpt", "copy")
    }
    changed = {k for k, v in weights["ckpt"].items() if not torch.equal(v, weights["copy"][k])}
    assert changed and all(k.startswith(("decoder.", "post_quant_conv.")) for k in changed)
    unets = [
        load_file(str(tmp_path / n / "unet" / "diffusion_pytorch_model.safetensors"))
        for n in ("ckpt", "copy")
    ]
    assert all(torch.equal(v, unets[1][k]) for k, v in unets[0].items())


def test_discriminator_probe(repo, tmp_path, tiny_vae, folders):
    from helpers import tiny_translator

    tiny_translator(tiny_vae).save_pretrained(tmp_path / "ckpt")
    args = ["--checkpoint", str(tmp_path / "ckpt"), "--data", str(folders), "--count", "10"]
    args += ["--held-out", "4", "--probes", "latents:2:0.05,pixels:2:0", "--nfe", "2"]
    result = _run(repo, tmp_path, "discriminator_probe", *args)
    assert [(r["space"], r["steps"]) for r in result["rows"]] == [("latents", 2), ("pixels", 2)]
    assert all(0 <= r["held-out accuracy"] <= 1 for r in result["rows"])


def test_pairing_accuracy_finds_every_counterpart_of_identical_domains(repo, tmp_path, tiny_vae):
    """With B a copy of A, every cost's cheapest partner and every plan's pair is the
    counterpart; misaligned files would fail this."""
    import shutil

    from helpers import make_folders, tiny_translator

    data = make_folders(tmp_path / "data")
    shutil.rmtree(data / "trainB")
    shutil.copytree(data / "trainA", data / "trainB")
    tiny_translator(tiny_vae).save_pretrained(tmp_path / "ckpt")
    args = ["--checkpoint", str(tmp_path / "ckpt"), "--data", str(data), "--split", "train"]
    args += ["--costs", "latents,pixels:8,latents-std", "--couplers", "exact,unbalanced:0.9:0.01"]
    args += ["--batch", "6", "--batches", "3", "--nfe", "1"]
    result = _run(repo, tmp_path, "pairing_accuracy", *args)
    assert result["pairs"] == 12
    for row in result["costs"]:
        assert row["nearest neighbour"] == row["dataset plan"] == row["batch plan"] == 1.0, row
    exact, unbalanced = result["couplers"]
    assert exact["counterpart pairs"] == 1.0 and exact["distinct A rows"] == 1.0
    assert unbalanced["counterpart pairs"] > 0.8
