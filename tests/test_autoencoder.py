import json

import pytest

from translate import autoencoder
from translate.autoencoder import STATE_DIR, train_autoencoder
from translate.codec import LatentCodec
from translate.config import OwnVAEConfig
from translate.images import scan_images

CFG = OwnVAEConfig(
    block_out_channels=[8, 16],
    norm_num_groups=4,
    steps=4,
    batch_size=4,
    warmup_steps=1,
    checkpoint_every=2,
)


def test_stage1_trains_saves_and_normalises(folders, tmp_path):
    files = scan_images(folders / "trainA").files + scan_images(folders / "trainB").files
    tests = scan_images(folders / "testA").files
    report = train_autoencoder(CFG, files, tests, tmp_path / "vae", resolution=16)
    assert report.steps == 4 and report.test_psnr > 0
    codec = LatentCodec.from_pretrained(report.path)
    assert codec.scaling_factor != 1.0  # set from the data
    assert json.loads((report.path / "metrics.json").read_text())["steps"] == 4
    assert not (tmp_path / f"vae{STATE_DIR}").exists()
    again = train_autoencoder(CFG, files, tests, tmp_path / "vae", resolution=16)
    assert again.path == report.path  # reused, not retrained


def test_stage1_resumes_after_a_kill(folders, tmp_path, monkeypatch):
    files = scan_images(folders / "trainA").files
    real_save = autoencoder._save_state

    def save_then_die(*args):
        real_save(*args)
        raise KeyboardInterrupt  # killed right after the step-2 resume point

    monkeypatch.setattr(autoencoder, "_save_state", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_autoencoder(CFG, files, files[:2], tmp_path / "vae", resolution=16)
    assert not (tmp_path / "vae").exists()
    monkeypatch.setattr(autoencoder, "_save_state", real_save)
    resumed = []
    real_resume = autoencoder._resume
    monkeypatch.setattr(
        autoencoder, "_resume", lambda *a: resumed.append(real_resume(*a)) or resumed[-1]
    )
    report = train_autoencoder(CFG, files, files[:2], tmp_path / "vae", resolution=16)
    assert resumed == [2] and report.steps == 4


def test_stage1_precision_picks_bf16_on_native_cpus_only(monkeypatch):
    from translate import precision

    assert precision.stage1_bf16("bf16", "cpu") and not precision.stage1_bf16("no", "cpu")
    for native in (True, False):
        monkeypatch.setattr(precision, "native_bf16_cpu", lambda native=native: native)
        assert precision.stage1_bf16("auto", "cpu") is native
        assert precision.stage1_bf16("auto", "cuda") is False  # a GPU's stage 1 stays float32


def test_stage1_in_bf16_is_its_own_cached_vae(folders, tmp_path):
    files = scan_images(folders / "trainA").files
    key = autoencoder.autoencoder_dir
    assert key(tmp_path, CFG, files, 16, None, bf16=True) != key(tmp_path, CFG, files, 16, None)
    as_auto = OwnVAEConfig(**{**CFG.__dict__, "mixed_precision": "bf16"})
    assert key(tmp_path, as_auto, files, 16, None) == key(tmp_path, CFG, files, 16, None)
    weights = {}
    for name, bf16 in (("fp32", False), ("bf16", True), ("bf16-again", True)):
        report = train_autoencoder(CFG, files, files[:2], tmp_path / name, 16, bf16=bf16)
        assert report.steps == 4 and report.test_psnr > 0
        weights[name] = (report.path / "diffusion_pytorch_model.safetensors").read_bytes()
    assert weights["bf16"] == weights["bf16-again"] != weights["fp32"]


def test_the_focal_frequency_term_is_added_only_when_weighted(folders, tmp_path):
    import torch
    from focal_frequency_loss import FocalFrequencyLoss

    from translate.autoencoder import build_autoencoder, stage1_loss

    vae = build_autoencoder(CFG, 16)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    losses = {}
    for weight in (0.0, 2.0):
        torch.manual_seed(0)  # the same posterior sample
        losses[weight] = stage1_loss(vae, x, CFG.kl_weight, frequency_weight=weight)
    (plain, l1, recon), (weighted, _, _) = losses[0.0], losses[2.0]
    assert torch.equal(plain, l1 + CFG.kl_weight * vae.encode(x).latent_dist.kl().mean())
    assert torch.allclose(weighted, plain + 2.0 * FocalFrequencyLoss()(recon, x))
    # a weighted recipe is its own cached VAE; weight 0 keeps the folder it had before the
    # setting existed (the key of the same settings without the field)
    files = scan_images(folders / "trainA").files
    key = autoencoder.autoencoder_dir
    before = key(tmp_path, CFG, files, 16, None)
    real_asdict = autoencoder.asdict
    autoencoder.asdict = lambda cfg: {
        k: v for k, v in real_asdict(cfg).items() if k != "frequency_weight"
    }
    try:
        assert key(tmp_path, CFG, files, 16, None) == before
    finally:
        autoencoder.asdict = real_asdict
    weighted_cfg = OwnVAEConfig(**{**CFG.__dict__, "frequency_weight": 2.0})
    assert key(tmp_path, weighted_cfg, files, 16, None) != key(tmp_path, CFG, files, 16, None)
    trained = {}
    for name, cfg in (("l1", CFG), ("focal", weighted_cfg)):
        report = train_autoencoder(cfg, files, files[:2], tmp_path / name, 16)
        trained[name] = (report.path / "diffusion_pytorch_model.safetensors").read_bytes()
    assert trained["l1"] != trained["focal"]
