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
    for i, path in enumerate(sorted((data / "trainA").iterdir())):  # 4 skin-toned file names
        if i % 3 == 0:
            path.rename(path.with_name(f"{path.stem}-1f3fb.png"))
    shutil.copytree(data / "trainA", data / "trainB")
    tiny_translator(tiny_vae).save_pretrained(tmp_path / "ckpt")
    args = ["--checkpoint", str(tmp_path / "ckpt"), "--data", str(data), "--split", "train"]
    costs = "latents,pixels:8,latents-std,latents+pixels:4*2,latents+hist:4*1"
    args += ["--costs", costs, "--couplers", "exact,unbalanced:0.9:0.01"]
    args += ["--batch", "6", "--batches", "3", "--nfe", "1"]
    result = _run(repo, tmp_path, "pairing_accuracy", *args)
    assert result["pairs"] == 12
    for row in result["costs"]:
        assert row["nearest neighbour"] == row["dataset plan"] == row["batch plan"] == 1.0, row
    exact, unbalanced = result["couplers"]
    assert exact["counterpart pairs"] == 1.0 and exact["distinct A rows"] == 1.0
    assert unbalanced["counterpart pairs"] > 0.8
    # batches from disjoint halves: the counterpart is never there; every toned partner carries
    # the only modifier there is, so "tone kept" equals "toned partner"
    assert [r["cost"] for r in result["tones"]] == costs.split(",")
    for row in result["tones"]:
        assert row["toned A rows"] > 0 and row["same emoji, other or no tone"] == 0.0
        assert 0 <= row["tone kept"] == row["toned partner"] <= 1


def test_paired_fit_of_a_still_field_is_the_identity(repo, tmp_path, tiny_vae, folders):
    """A field that never moves leaves every latent where it started: its error is exactly the
    untranslated source's (1.0) on both splits and at every step count."""
    from helpers import tiny_translator

    tr = tiny_translator(tiny_vae)
    torch.nn.init.zeros_(tr.unet.conv_out.weight)
    torch.nn.init.zeros_(tr.unet.conv_out.bias)
    tr.save_pretrained(tmp_path / "ckpt")
    args = [str(tmp_path / "ckpt"), "--data", str(folders), "--nfe", "1,3", "--count", "5"]
    result = _run(repo, tmp_path, "paired_fit", *args)
    rows = result["rows"]
    assert [(r["split"], r["NFE"], r["pairs"]) for r in rows] == [
        ("train", 1, 5),
        ("train", 3, 5),
        ("test", 1, 4),
        ("test", 3, 4),
    ]
    assert all(r["latent error"] == pytest.approx(1.0, abs=1e-6) for r in rows)


def test_sharpness_calibration_orders_the_known_blurs(repo, tmp_path, tiny_vae, folders):
    from helpers import tiny_translator

    tiny_translator(tiny_vae).save_pretrained(tmp_path / "ckpt")
    grid = tmp_path / "grid.png"
    args = ["--checkpoint", str(tmp_path / "ckpt"), "--data", str(folders), "--nfe", "1,2"]
    args += ["--direction", "b2a", "--grid", str(grid)]
    result = _run(repo, tmp_path, "sharpness_calibration", *args)
    rows = {r["set"]: r for r in result["rows"]}
    assert list(rows)[-2:] == ["translations, 1 NFE", "translations, 2 NFE"]
    assert rows["real targets"]["spectral"] == 1.0 and rows["real targets"]["edge98"] == 1.0
    for measure in ("spectral", "edge98"):
        blurs = [rows[f"Gaussian blur σ={s}"][measure] for s in (0.7, 1.0, 1.5)]
        assert 1.0 > blurs[0] > blurs[1] > blurs[2] > 0, (measure, blurs)
    from PIL import Image

    assert Image.open(grid).size == (8 * 16, len(rows) * 16)


def test_benchmarks_translate_with_the_asked_guidance_and_record_it(
    repo, tmp_path, tiny_vae, folders
):
    """A guided checkpoint's translations are guided unless ``--guidance`` says otherwise, and
    the JSON says which weight each direction had; a checkpoint without a guide refuses a
    weight other than 1 before it writes anything."""
    from helpers import tiny_translator

    tiny_translator(tiny_vae, guidance=2.0).save_pretrained(tmp_path / "guided")
    args = ["--checkpoint", str(tmp_path / "guided"), "--data", str(folders), "--nfe", "1"]
    own = _run(repo, tmp_path, "sharpness_calibration", *args)
    alone = _run(repo, tmp_path, "sharpness_calibration", *args, "--guidance", "1")
    whole = {"until": 1.0}
    assert own["guidance"] == {"a2b": {"weight": 2.0, **whole}, "b2a": {"weight": 1.0, **whole}}
    assert alone["guidance"] == {d: {"weight": 1.0, **whole} for d in ("a2b", "b2a")}
    translated = [run["rows"][-1] for run in (own, alone)]
    assert translated[0]["set"] == translated[1]["set"] == "translations, 1 NFE"
    assert translated[0]["spectral"] != translated[1]["spectral"]
    tiny_translator(tiny_vae).save_pretrained(tmp_path / "plain")
    script = repo / "benchmarks" / "sharpness_calibration.py"
    args = ["--checkpoint", str(tmp_path / "plain"), "--data", str(folders), "--guidance", "2"]
    refused = subprocess.run(
        [sys.executable, str(script), *args, "--out", str(tmp_path / "no.json")],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert refused.returncode != 0 and "needs a guide" in refused.stderr
    assert not (tmp_path / "no.json").exists()


def test_train_parts_times_each_part_of_the_recipe_step(repo, tmp_path, folders, tiny_vae):
    args = ["--config", "configs/tiny.yaml", "--steps", "3", "--warmup", "1"]
    args += [f"data.root={folders}", f"vae.pretrained={tiny_vae}"]
    args += [f"data.cache_dir={tmp_path / 'cache'}", "adversarial.trajectory_batch=3"]
    moving = _run(repo, tmp_path, "train_parts", *args)
    whole = _run(repo, tmp_path, "train_parts", *args, "--whole-batch-rollout")
    parts = ["rollout", "regression", "backward", "discriminators", "step"]
    for result in (moving, whole):
        assert [r["part"] for r in result["rows"]] == parts
        assert all(r["steps"] == 2 and r["ms/step"] > 0 for r in result["rows"])
        step = result["rows"][-1]["ms/step"]
        assert sum(r["ms/step"] for r in result["rows"][:-1]) < step  # the parts of one step
        assert len(result["unet_sha256"]) == 64
    assert (moving["rollout"], whole["rollout"]) == ("moving rows", "whole batch")


def test_codec_ceiling_trains_stage1_once_and_scores_both_domains(repo, tmp_path, folders):
    args = ["--config", "configs/tiny.yaml", f"data.root={folders}"]
    args += [f"data.cache_dir={tmp_path / 'cache'}", "vae.own.steps=2", "vae.own.batch_size=4"]
    args += ["vae.own.block_out_channels=[8,16]", "vae.own.norm_num_groups=4"]
    args += ["vae.own.latent_channels=6", "vae.own.mixed_precision=no"]
    first = _run(repo, tmp_path, "codec_ceiling", *args)
    assert [r["domain"] for r in first["rows"]] == ["A", "B"]
    assert all(r["latent dims"] == "6x8x8" and r["images"] == 4 for r in first["rows"])
    assert all(r["sharpness"] > 0 and r["psnr"] > 0 for r in first["rows"])
    again = _run(repo, tmp_path, "codec_ceiling", *args)  # the cached VAE, not a new one
    assert again["codec"] == first["codec"] and again["rows"] == first["rows"]


def test_domain_classifier_scores_every_set(repo, tmp_path, tiny_vae, folders):
    """Circles against squares: every classifier is scored on the real, reconstructed and
    translated sets, each share in [0, 1]."""
    from helpers import tiny_translator

    tiny_translator(tiny_vae).save_pretrained(tmp_path / "ckpt")
    args = [str(tmp_path / "ckpt"), "--data", str(folders), "--nfe", "1", "--seeds", "0"]
    args += ["--failures", str(tmp_path / "failures.png")]
    result = _run(repo, tmp_path, "domain_classifier", *args)
    names = [r["classifier"] for r in result["rows"]]
    assert names[-1] == "CNN, seed 0" and names[0] == "linear probe, latents 8x8"
    sets = ["real A", "real B", "VAE A", "VAE B", "A→B 1 NFE", "B→A 1 NFE"]
    for row in result["rows"]:
        assert all(0 <= row[s] <= 1 for s in sets), row


def test_target_prior_at_s_1_leaves_the_translations_as_they_were(
    repo, tmp_path, tiny_vae, folders
):
    """The refinement from s = 1 starts at the translation and integrates over no time: its
    row is the plain checkpoint's (to the rounding of dividing by the latents' std and
    multiplying back), but for the NFE; s = 0.5 changes the outputs."""
    from helpers import tiny_translator

    tiny_translator(tiny_vae).save_pretrained(tmp_path / "ckpt")
    out, prior = tmp_path / "eval", tmp_path / "prior"
    args = ["--checkpoint", str(tmp_path / "ckpt"), "--data-root", str(folders)]
    args += ["--steps", "2", "--batch", "4", "--width", "32", "--variants", "1.0:2,0.5:1"]
    args += ["--nfe", "2", "--prior", str(prior), "--out", str(out)]

    def target_prior(*argv):
        script = str(repo / "benchmarks" / "target_prior.py")
        return subprocess.run(
            [sys.executable, script, *argv],
            cwd=repo / "benchmarks",
            capture_output=True,
            text=True,
            timeout=300,
        )

    result = target_prior(*args)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (prior / "prior" / "config.json").is_file() and (out / "report.md").is_file()
    rows = json.loads((out / "metrics.json").read_text())["rows"]
    for direction in ("a2b", "b2a"):
        by_model = {r["model"]: r for r in rows if r["direction"] == direction}
        plain, still, moved = (by_model[m] for m in ("plain", "prior-s1.0-k2", "prior-s0.5-k1"))
        assert (plain["nfe"], still["nfe"], moved["nfe"]) == (2, 4, 3)
        assert still["scores"]["ssim"] == pytest.approx(plain["scores"]["ssim"], rel=1e-5)
        assert still["scores"]["l2"] == pytest.approx(plain["scores"]["l2"], rel=1e-5)
        assert moved["scores"]["l2"] != pytest.approx(plain["scores"]["l2"], rel=1e-3)
    # a rerun reuses the saved prior only with the settings it was trained with
    other = [*args[: args.index("--width") + 1], "64", *args[args.index("--width") + 2 :]]
    refused = target_prior(*other)
    assert refused.returncode != 0 and "was trained with" in refused.stderr


def test_attach_guide_gives_an_old_checkpoint_a_guide(repo, tmp_path, tiny_vae):
    from helpers import tiny_translator

    from translate import Translator

    main, weak = tiny_translator(tiny_vae), tiny_translator(tiny_vae)
    with torch.no_grad():
        for p in weak.unet.parameters():
            p.mul_(0.5)
    main.save_pretrained(tmp_path / "final")
    weak.save_pretrained(tmp_path / "early")
    script = [sys.executable, str(repo / "benchmarks" / "attach_guide.py")]
    args = [str(tmp_path / "final"), str(tmp_path / "early"), "--a2b", "3"]
    done = subprocess.run([*script, *args, "--to", str(tmp_path / "guided")], cwd=repo, timeout=300)
    assert done.returncode == 0
    guided = Translator.from_pretrained(tmp_path / "guided", device="cpu")
    assert guided.info.guidance == {"a2b": 3.0, "b2a": 1.0}
    x, t = torch.randn(2, 4, 8, 8), torch.full((2,), 0.5)
    v, g = main.field(x, t), weak.field(x, t)
    assert torch.allclose(guided.velocity_field(x, "a2b")(x, t), g + 3 * (v - g), atol=1e-6)
    assert torch.equal(guided.velocity_field(x, "b2a")(x, t), v)
    # B -> A guided on the first half of its path from the source (t from 1 down to 0.5)
    args = [str(tmp_path / "final"), str(tmp_path / "early"), "--a2b", "1", "--b2a", "2"]
    args += ["--b2a-until", "0.5", "--to", str(tmp_path / "half")]
    assert subprocess.run([*script, *args], cwd=repo, timeout=300).returncode == 0
    half = Translator.from_pretrained(tmp_path / "half", device="cpu")
    assert half.info.guidance == {"a2b": 1.0, "b2a": 2.0}
    assert half.info.guidance_until == {"b2a": 0.5}
    near_source, near_target = torch.full((2,), 0.75), torch.full((2,), 0.25)
    v_s, g_s = main.field(x, near_source), weak.field(x, near_source)
    b2a = half.velocity_field(x, "b2a")
    assert torch.allclose(b2a(x, near_source), g_s + 2 * (v_s - g_s), atol=1e-6)
    assert torch.equal(b2a(x, near_target), main.field(x, near_target))
    # a guide of another architecture is refused in one line
    other = tiny_translator(tiny_vae, source_noise=0.1)  # two more input channels
    other.save_pretrained(tmp_path / "other")
    args = [str(tmp_path / "final"), str(tmp_path / "other"), "--to", str(tmp_path / "no")]
    refused = subprocess.run([*script, *args], cwd=repo, capture_output=True, text=True)
    assert refused.returncode == 2 and "not of the field's architecture" in refused.stderr
    assert not (tmp_path / "no").exists()


def test_guidance_interval_guides_only_inside_its_interval(repo, tmp_path, tiny_vae, folders):
    """With a guided checkpoint: the empty interval is the field alone (the rows of the whole
    path at weight 1), the whole path is plain guidance, and half of it is neither."""
    from helpers import tiny_translator

    tiny_translator(tiny_vae, guidance=2.0).save_pretrained(tmp_path / "ckpt")

    def interval_rows(out, *argv):
        script = str(repo / "benchmarks" / "guidance_interval.py")
        args = ["--checkpoint", str(tmp_path / "ckpt"), "--data-root", str(folders)]
        args += ["--nfe", "2", "--out", str(tmp_path / out), *argv]
        done = subprocess.run(
            [sys.executable, script, *args], cwd=repo, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr[-2000:]
        rows = json.loads((tmp_path / out / "metrics.json").read_text())["rows"]
        return {(r["model"], r["direction"]): r["scores"] for r in rows if r["steps"] == 2}

    guided = interval_rows("w2", "--guidance", "2", "--intervals", "0:1,0:0,0:0.5")
    alone = interval_rows("w1", "--guidance", "1", "--intervals", "0:1")
    for direction in ("a2b", "b2a"):
        whole, never, half = (guided[(m, direction)] for m in ("s0-1", "s0-0", "s0-0.5"))
        assert never["l2"] == alone[("s0-1", direction)]["l2"]
        assert len({whole["l2"], never["l2"], half["l2"]}) == 3


def test_skin_tone_keeps_every_tone_of_the_counterparts(repo, tmp_path, tiny_vae):
    """Two sets of toned figures with the same names: the counterparts keep every tone, each
    set's palette is found, and the checkpoint's rows cover both directions."""
    from helpers import PALETTE_A, PALETTE_B, tiny_translator, toned_emoji_set

    from translate.images import to_pil

    for domain, colours in (("A", PALETTE_A), ("B", PALETTE_B)):
        folder = tmp_path / "data" / f"test{domain}"
        folder.mkdir(parents=True)
        images, names = toned_emoji_set(colours, size=16)  # the tiny model's resolution
        for image, name in zip(to_pil(images), names, strict=True):
            image.save(folder / f"{name}.png")
    tiny_translator(tiny_vae).save_pretrained(tmp_path / "ckpt")
    args = [str(tmp_path / "ckpt"), "--data", str(tmp_path / "data"), "--a2b-steps", "1"]
    result = _run(repo, tmp_path, "skin_tone", *args, "--b2a-steps", "2")
    for domain, colours in (("A", PALETTE_A), ("B", PALETTE_B)):
        found = torch.tensor(result["palettes"][domain])
        assert (found - torch.tensor(colours, dtype=torch.float32)).abs().max() <= 1
    rows = {(r["model"], r["direction"]): r for r in result["rows"]}
    models = ("identity", "counterpart", "ckpt")
    assert set(rows) == {(m, d) for m in models for d in ("a2b", "b2a")}
    for direction in ("a2b", "b2a"):
        assert rows[("counterpart", direction)]["kept"] == 1.0
        assert rows[("counterpart", direction)]["measured"] == 20
    assert result["settings"]["ckpt a2b"]["steps"] == 1
    assert result["settings"]["ckpt b2a"]["steps"] == 2


def test_reflow_pairs_times_both_precisions_against_float32(repo, tmp_path, tiny_vae):
    from helpers import tiny_translator

    tiny_translator(tiny_vae).save_pretrained(tmp_path / "ckpt")
    args = ["--checkpoint", str(tmp_path / "ckpt"), "--count", "6", "--nfe", "2", "--batch", "4"]
    rows = _run(repo, tmp_path, "reflow_pairs", *args)["rows"]
    assert [r["precision"] for r in rows] == ["float32", "bf16 autocast"]
    assert rows[0]["max |diff|"] == 0.0  # float32 against itself
    assert 0 < rows[1]["mean |diff|"] < 0.1 * rows[1]["latent std"]  # bf16: close, not equal


def test_run_profile(repo, tmp_path):
    """Samples of the launcher and of background threads are left out; each sample of the
    main thread goes to the first stage on its stack, the flow's step also to its part."""
    main = 'process 1:"python3 train.py";<module> (train.py:8);main (translate/train.py:115)'
    step = f"{main};Trainer._loop (translate/train.py:362);Trainer._update (translate/train.py:419)"
    lines = [
        'process 0:"accelerate launch";main (accelerate/commands/launch.py:9) 500',
        f"{main};Thread._bootstrap (threading.py:1);TMonitor.run (tqdm/_monitor.py:60) 700",
        f"{main};train_autoencoder (translate/autoencoder.py:170) 30",
        f"{main};train_autoencoder (a.py:1);_load_pixels (translate/autoencoder.py:94) 4",
        f"{step};Accelerator.backward (accelerate/accelerator.py:2) 50",
        f"{step};Trainer._rollout (translate/train.py:544) 10",
        f"{step};cfm_step (translate/flow.py:314) 20",
        f"{main};Trainer._loop (translate/train.py:362);EMAModel.step (diffusers/ema.py:1) 6",
        f"{main};Trainer._reflow_round (translate/train.py:500) 8",
        f"{main};something_else (x.py:1) 2",
    ]
    raw = tmp_path / "prof.txt"
    raw.write_text("\n".join(lines) + "\n")
    result = _run(repo, tmp_path, "run_profile", str(raw), "--rate", "2")
    assert result["total_s"] == 130 / 2
    stages = {row["stage"]: row["s"] for row in result["stages"]}
    assert stages == {
        "flow: steps": 40.0,
        "stage 1: steps": 15.0,
        "stage 1: loading images": 2.0,
        "flow: EMA": 3.0,
        "flow: reflow pairs": 4.0,
        "other": 1.0,
    }
    parts = {row["part"]: row["s"] for row in result["flow_step_parts"]}
    assert parts == {"backward": 25.0, "regression forward": 10.0, "rollout (no grad)": 5.0}
