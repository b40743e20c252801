"""The real training script on tiny data: run, kill -9, resume, report done, translate."""

import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from translate import Translator, runs
from translate import flow as flow_module
from translate import train as train_module
from translate.config import load_config
from translate.errors import TranslateError
from translate.train import sample_labels


@pytest.fixture
def workspace(tmp_path, folders, tiny_vae, repo):
    def overrides(*extra):
        return [
            f"data.root={folders}",
            f"vae.pretrained={tiny_vae}",
            f"data.cache_dir={tmp_path / 'cache'}",
            f"train.output_dir={tmp_path / 'run'}",
            "train.log_with=none",
            *extra,
        ]

    def command(*extra):
        return [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--num_processes",
            "1",
            str(repo / "train.py"),
            "--config",
            str(repo / "configs" / "tiny.yaml"),
            *overrides(*extra),
        ]

    def config(*extra):
        return load_config(repo / "configs" / "tiny.yaml", overrides(*extra))

    return tmp_path, command, config


def _run(cmd, cwd):
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_kill_resume_finish_translate(workspace, folders):
    tmp, command, _ = workspace
    cmd = command("train.steps=24", "train.checkpoint_every=3", "train.sample_every=12")
    proc = subprocess.Popen(
        cmd, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 240
    while runs.latest_state(tmp / "run") is None and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # kill -9 the launcher and the trainer
    proc.wait()
    killed_at = runs.latest_state(tmp / "run")
    assert killed_at is not None and runs.finished_step(tmp / "run") is None

    resumed = _run(cmd, tmp)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stdout + resumed.stderr
    assert runs.finished_step(tmp / "run") == 24
    assert (tmp / "run" / "samples" / "step-000024.png").is_file()
    assert len(runs.numbered(tmp / "run" / runs.STATE, "step")) == 2  # rotation keeps 2
    assert (tmp / "run" / "config.yaml").is_file()

    again = _run(cmd, tmp)
    assert again.returncode == 0 and "already finished" in again.stdout + again.stderr

    translator = Translator.from_pretrained(tmp / "run" / runs.FINAL, device="cpu")
    # the held-out sample-grid sources travel with the checkpoint as examples to try
    assert sorted(translator.examples) == ["a2b", "b2a"]
    assert all(im.size == (16, 16) for ims in translator.examples.values() for im in ims)
    # the resolved config's per-direction step counts travel with it (tiny.yaml: 2, and B -> A
    # the default's own 8)
    assert (translator.default_steps("a2b"), translator.default_steps("b2a")) == (2, 8)
    source = folders / "testA" / "000.png"
    for direction in ("a2b", "b2a"):
        for method in ("euler", "dopri5"):
            (out,) = translator([source], direction=direction, steps=2, method=method)
            assert out.size == (16, 16)


def test_overlap_and_memory_mapped_latents_train_exactly_like_the_plain_loop(workspace):
    tmp, _, config = workspace
    weights = []
    for name, settings in (
        ("plain", ("train.overlap_coupling=false", "train.latent_storage=memory")),
        ("overlap", ("train.overlap_coupling=true", "train.latent_storage=memory")),
        ("mmap", ("train.overlap_coupling=false", "train.latent_storage=mmap")),
    ):
        out = tmp / f"run-{name}"
        train_module.main(config(*settings, f"train.output_dir={out}", "train.steps=4"))
        weights.append(
            (out / runs.FINAL / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
        )
    assert weights[0] == weights[1] == weights[2]


def test_dataset_scope_trains_the_same_with_and_without_overlap(workspace):
    tmp, _, config = workspace
    weights = []
    for overlap in ("false", "true"):
        out = tmp / f"run-dataset-{overlap}"
        settings = ("flow.scope=dataset", f"train.overlap_coupling={overlap}", "train.steps=3")
        train_module.main(config(*settings, f"train.output_dir={out}"))
        weights.append(
            (out / runs.FINAL / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
        )
    assert weights[0] == weights[1]


@pytest.mark.parametrize("schedule", ["constant", "cosine", "linear"])
def test_lr_schedules_warm_up_then_hold_or_decay_to_zero(schedule):
    from translate.config import TrainConfig

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    cfg = TrainConfig(steps=10, warmup_steps=2, lr_schedule=schedule)
    scheduler = train_module.build_scheduler(optimizer, cfg, processes=2)
    lrs = []
    for _ in range(cfg.steps * 2):  # two processes: two scheduler steps per optimizer step
        optimizer.step()
        scheduler.step()
        lrs.append(scheduler.get_last_lr()[0])
    assert lrs[1] == pytest.approx(0.5)  # half-way through the warmup
    if schedule == "constant":
        assert lrs[3:] == [1.0] * 17
    else:
        assert lrs[-1] == pytest.approx(0.0) and all(a >= b for a, b in itertools.pairwise(lrs[3:]))


def test_loss_and_schedule_options_reach_the_training(workspace):
    """Each option changes the trained weights (a setting the loop ignored would not)."""
    tmp, _, config = workspace
    weights = {}
    for setting in ("plain", "flow.high_frequency_weight=5", "train.lr_schedule=linear"):
        out = tmp / f"run-{setting.split('.')[-1]}"
        extra = () if setting == "plain" else (setting,)
        steps = ("train.steps=4", "train.warmup_steps=1")
        train_module.main(config(*extra, *steps, f"train.output_dir={out}"))
        file = out / runs.FINAL / "unet" / "diffusion_pytorch_model.safetensors"
        weights[setting] = file.read_bytes()
    assert len(set(weights.values())) == 3


def test_paired_scope_trains_on_namesakes_and_refuses_unpaired_files(workspace, folders):
    tmp, _, config = workspace
    out = tmp / "run-paired"
    train_module.main(config("flow.scope=paired", f"train.output_dir={out}", "train.steps=2"))
    assert Translator.from_pretrained(out / runs.FINAL, device="cpu").info.step == 2
    (folders / "trainB" / "000.png").rename(folders / "trainB" / "extra.png")
    with pytest.raises(TranslateError, match="flow.scope=paired pairs files by name"):
        train_module.main(config("flow.scope=paired", f"train.output_dir={tmp / 'again'}"))


def test_speed_options_train_and_export_loadable_checkpoints(workspace):
    tmp, _, config = workspace
    out = tmp / "run-options"
    settings = ("train.channels_last=true", "train.fused_adamw=true", "train.checkpoint_every=1")
    train_module.main(config(*settings, f"train.output_dir={out}", "train.steps=2"))
    translator = Translator.from_pretrained(out / runs.FINAL, device="cpu")
    assert translator.info.step == 2
    resumed = train_module.main(config(*settings, f"train.output_dir={out}", "train.steps=3"))
    assert Translator.from_pretrained(resumed, device="cpu").info.step == 3


@pytest.mark.parametrize(
    "setting, cuda, native, expected",
    [
        ("launcher", False, True, None),
        ("auto", False, True, "bf16"),
        ("auto", False, False, None),  # emulated bf16 would be slower: the launcher decides
        ("auto", True, True, None),
        ("no", False, True, "no"),
        ("bf16", False, False, "bf16"),
    ],
)
def test_mixed_precision_auto_is_bf16_only_on_cpus_with_native_bf16(
    monkeypatch, setting, cuda, native, expected
):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert train_module.mixed_precision(setting, cuda) == expected


def test_bf16_autocast_trains_and_exports(workspace):
    tmp, command, config = workspace
    train_module.main(config("train.steps=2", f"train.output_dir={tmp / 'fp32'}"))
    cmd = command("train.steps=2", "train.mixed_precision=bf16", f"train.output_dir={tmp / 'bf16'}")
    result = _run(cmd, tmp)
    assert result.returncode == 0, result.stderr[-2000:]
    assert Translator.from_pretrained(tmp / "bf16" / runs.FINAL, device="cpu").info.step == 2
    assert _final_unet(tmp / "bf16") != _final_unet(tmp / "fp32")  # autocast took effect


# the EMA loads without diffusers' path-to-from_config route, deprecated for diffusers 1.0
@pytest.mark.filterwarnings("error:It is deprecated to pass a pretrained model:FutureWarning")
def test_kill_during_save_resumes_from_previous_state(workspace, monkeypatch):
    tmp, _, config = workspace
    cfg = config("train.steps=6", "train.checkpoint_every=3", "train.sample_every=100")
    real_replace = train_module.atomic.replace

    def die_at_second_state(src, dst):
        if dst.name == "step-000006":
            raise KeyboardInterrupt  # killed after writing, before the rename
        real_replace(src, dst)

    monkeypatch.setattr(train_module.atomic, "replace", die_at_second_state)
    with pytest.raises(KeyboardInterrupt):
        train_module.main(cfg)
    assert runs.latest_state(tmp / "run").name == "step-000003"
    assert (tmp / "run" / "state" / ".tmp-step-000006").exists()  # a partial write never loads
    monkeypatch.setattr(train_module.atomic, "replace", real_replace)
    assert train_module.main(cfg) == tmp / "run" / runs.FINAL
    assert runs.finished_step(tmp / "run") == 6
    assert not [p for p in (tmp / "run" / "state").iterdir() if p.name.startswith(".tmp")]


def test_nan_loss_stops_without_a_poisoned_checkpoint(workspace, monkeypatch):
    tmp, _, config = workspace
    cfg = config("train.steps=8", "train.checkpoint_every=3", "train.sample_every=100")
    real_loss = flow_module.cfm_loss
    calls = []

    def poisoned(pred, target, *rest):
        calls.append(1)
        loss = real_loss(pred, target, *rest)
        return loss * float("nan") if len(calls) == 5 else loss

    monkeypatch.setattr(flow_module, "cfm_loss", poisoned)
    with pytest.raises(TranslateError, match="loss became nan at step 5; stopped without saving"):
        train_module.main(cfg)
    assert runs.latest_state(tmp / "run").name == "step-000003"
    ema = Translator.from_pretrained(tmp / "run" / "checkpoint-000003", device="cpu").unet
    assert all(torch.isfinite(p).all() for p in ema.parameters())


def test_changed_model_refuses_to_resume(workspace):
    _, _, config = workspace
    train_module.main(config("train.steps=3", "train.checkpoint_every=3"))
    with pytest.raises(TranslateError, match="different config .*model.layers_per_block"):
        train_module.main(config("train.steps=6", "model.layers_per_block=2"))


def test_cli_errors_are_one_line(repo, tmp_path):
    result = _run([sys.executable, str(repo / "train.py"), "train.stepz=3"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "train.steps" in result.stderr
    missing = _run(
        [
            sys.executable,
            str(repo / "train.py"),
            "data.source=folders",
            f"data.root={tmp_path / 'none'}",
        ],
        tmp_path,
    )
    assert missing.returncode == 2 and "data folder not found" in missing.stderr
    # the README's launch command: no launcher notes, no launcher traceback, only the one line
    launched = _run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            str(repo / "configs" / "accelerate" / "local.yaml"),
            "-q",
            str(repo / "train.py"),
            "train.stepz=3",
        ],
        tmp_path,
    )
    assert launched.returncode != 0 and launched.stdout == ""
    assert launched.stderr.strip().count("\n") == 0 and "train.steps" in launched.stderr


def test_resolution_the_pretrained_vae_and_unet_cannot_divide_is_refused_before_encoding(
    workspace,
):
    from translate.errors import ConfigError

    tmp, _, config = workspace  # tiny VAE: factor 2; tiny UNet: 2 levels, factor 2
    with pytest.raises(ConfigError, match=r"data.resolution=18 must be a multiple of 4"):
        train_module.main(config("data.resolution=18"))
    assert not (tmp / "cache" / "latents").exists() and not (tmp / "run" / "state").exists()


@pytest.mark.parametrize(
    "full",
    [
        OSError(28, "No space left on device"),
        RuntimeError(
            "[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed "
            "writing file data/0: file write failed"
        ),  # how torch.save says it
    ],
)
def test_a_full_disk_is_one_line_keeps_the_last_state_and_resumes(workspace, monkeypatch, full):
    from translate.errors import TranslateError

    tmp, _, config = workspace
    cfg = config("train.steps=6", "train.checkpoint_every=3")
    reference = tmp / "reference"
    train_module.main(config("train.steps=6", f"train.output_dir={reference}"))
    real_save = train_module.save_file
    calls = []

    def fills_up(*args, **kwargs):  # the step-6 save runs out of space
        calls.append(1)
        if len(calls) == 2:
            raise full
        return real_save(*args, **kwargs)

    monkeypatch.setattr(train_module, "save_file", fills_up)
    with pytest.raises(TranslateError, match=r"^the disk is full .*kept: .*step-000003") as err:
        train_module.main(cfg)
    assert "\n" not in str(err.value)
    run = tmp / "run"
    assert runs.latest_state(run).name == "step-000003"
    assert not [p for p in (run / "state").iterdir() if p.name.startswith(".tmp-")]
    monkeypatch.setattr(train_module, "save_file", real_save)  # space freed: rerun resumes
    train_module.main(cfg)
    assert _final_unet(run) == _final_unet(reference)


def _final_unet(out):
    return (out / runs.FINAL / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()


def test_adversarial_weight_zero_is_the_plain_recipe_bit_for_bit(workspace):
    from safetensors.torch import load_file

    from translate.adversarial import Adversary

    tmp, _, config = workspace
    out = {}
    for name, settings in (
        ("zero", ("adversarial.weight=0", "adversarial.start=0", "adversarial.r1_gamma=1")),
        ("idle", ("adversarial.start=3", "adversarial.disc_start=3")),  # built, never used
        ("disc-only", ("adversarial.start=3", "adversarial.disc_start=0")),  # no generator term
    ):
        out[name] = tmp / f"run-{name}"
        train_module.main(config(*settings, "train.steps=3", f"train.output_dir={out[name]}"))
    assert not (runs.latest_state(out["zero"]) / "adversarial").exists()  # nothing built
    assert _final_unet(out["zero"]) == _final_unet(out["idle"]) == _final_unet(out["disc-only"])
    # the discriminators can train before the generator term without touching the field
    state = runs.latest_state(out["disc-only"]) / "adversarial" / Adversary.WEIGHTS
    fresh = Adversary(4, 32, 1e-3, 0.05, "cpu", seed=0).disc.state_dict()  # the defaults
    trained = load_file(str(state))
    assert any(not torch.equal(trained[k], fresh[k]) for k in fresh)


@pytest.mark.parametrize("states", ["path", "trajectory", "pixels"])
def test_adversarial_term_trains_saves_and_resumes_exactly(workspace, states):
    tmp, _, config = workspace
    adv = ("adversarial.weight=0.5", "adversarial.start=1", "adversarial.ramp=2")
    if states == "path":  # judged from points of the path
        adv += ("adversarial.trajectory_steps=0",)
    else:  # judged from the field's own 2-step Euler states
        adv += ("adversarial.trajectory_steps=2", "adversarial.trajectory_batch=3")
    if states == "pixels":  # as decoded images
        adv += ("adversarial.space=pixels",)
    plain, whole, split = tmp / "run-plain", tmp / "run-adv", tmp / "run-adv-split"
    train_module.main(config("train.steps=6", f"train.output_dir={plain}"))
    train_module.main(config(*adv, "train.steps=6", f"train.output_dir={whole}"))
    assert _final_unet(whole) != _final_unet(plain)  # the term changes the field
    if states == "trajectory":  # and the rolled-out states change it differently
        path_only = tmp / "run-adv-path"
        path_states = (*adv[:3], "adversarial.trajectory_steps=0")
        train_module.main(config(*path_states, "train.steps=6", f"train.output_dir={path_only}"))
        assert _final_unet(whole) != _final_unet(path_only)
        last = tmp / "run-adv-last"  # judging only the K-step translations changes it too
        last_states = (*adv, "adversarial.trajectory_states=last")
        train_module.main(config(*last_states, "train.steps=6", f"train.output_dir={last}"))
        assert _final_unet(last) not in (_final_unet(whole), _final_unet(path_only))
    state = runs.latest_state(whole) / "adversarial"
    assert (state / "discriminators.safetensors").is_file() and (state / "optimizer.bin").is_file()
    first_layer = load_file(str(state / "discriminators.safetensors"))["nets.a.net.0.weight"]
    assert first_layer.shape[1] == (3 if states == "pixels" else 4)  # RGB or latent channels
    if states == "pixels":  # and the images change the field otherwise than the latents do
        latent_space = tmp / "run-adv-latents"
        train_module.main(config(*adv[:-1], "train.steps=6", f"train.output_dir={latent_space}"))
        assert _final_unet(whole) != _final_unet(latent_space)
    # stopped at step 3 and resumed: the discriminators and their optimizer come back exactly
    train_module.main(config(*adv, "train.steps=3", f"train.output_dir={split}"))
    train_module.main(config(*adv, "train.steps=6", f"train.output_dir={split}"))
    assert _final_unet(split) == _final_unet(whole)
    translator = Translator.from_pretrained(split / runs.FINAL, device="cpu")
    (out,) = translator([tmp / "run-adv" / "samples" / "step-000006.png"], steps=2)
    assert out.size == (16, 16)


def test_real_batch_feeds_the_discriminators_that_many_reals(workspace, monkeypatch):
    from translate.adversarial import Adversary

    tmp, _, config = workspace
    adv = ("adversarial.weight=0.5", "adversarial.start=1", "adversarial.ramp=2")
    adv += ("adversarial.trajectory_steps=2", "adversarial.trajectory_batch=3")
    seen, update = [], Adversary.update

    def recording(self, real, fake, *args, **kwargs):
        seen.append((len(real["a"]), len(real["b"]), len(fake["a"])))
        return update(self, real, fake, *args, **kwargs)

    monkeypatch.setattr(Adversary, "update", recording)
    out = {}
    for name, n in (("whole", None), ("eight", 8), ("three", 3)):  # tiny.yaml's batch is 8
        out[name] = tmp / f"run-{name}"
        setting = "null" if n is None else n
        settings = (*adv, f"adversarial.real_batch={setting}", "train.steps=3")
        train_module.main(config(*settings, f"train.output_dir={out[name]}"))
    assert seen == [(8, 8, 3)] * 6 + [(3, 3, 3)] * 3
    assert _final_unet(out["whole"]) == _final_unet(out["eight"])  # the whole batch: the same
    assert _final_unet(out["three"]) != _final_unet(out["whole"])


def test_lazy_r1_takes_the_penalty_every_nth_step_at_n_times_the_weight(workspace, monkeypatch):
    from translate.adversarial import Adversary

    tmp, _, config = workspace
    adv = ("adversarial.weight=0.5", "adversarial.start=1", "adversarial.ramp=2")
    adv += ("adversarial.trajectory_steps=2", "adversarial.trajectory_batch=3")
    gammas, update = [], Adversary.update

    def recording(self, *args, **kwargs):
        gammas.append(args[5] if len(args) > 5 else kwargs.get("r1_scale"))
        return update(self, *args, **kwargs)

    monkeypatch.setattr(Adversary, "update", recording)
    out = {}
    for name, every in (("each", 1), ("lazy", 2)):
        out[name] = tmp / f"run-{name}"
        settings = (*adv, f"adversarial.r1_every={every}", "train.steps=4")
        train_module.main(config(*settings, f"train.output_dir={out[name]}"))
    assert gammas == [1.0] * 4 + [0.0, 2.0, 0.0, 2.0]
    assert _final_unet(out["lazy"]) != _final_unet(out["each"])
    split = tmp / "run-lazy-split"  # stopped after an odd step, resumed: the same weights
    lazy = (*adv, "adversarial.r1_every=2")
    train_module.main(config(*lazy, "train.steps=3", f"train.output_dir={split}"))
    train_module.main(config(*lazy, "train.steps=4", f"train.output_dir={split}"))
    assert _final_unet(split) == _final_unet(out["lazy"])


def test_transport_term_changes_the_field_and_resumes_exactly(workspace):
    tmp, _, config = workspace
    adv = ("adversarial.weight=0.5", "adversarial.start=1", "adversarial.ramp=2")
    adv += ("adversarial.trajectory_steps=2", "adversarial.trajectory_batch=3")
    tau = (*adv, "adversarial.transport_weight=1")
    without, whole, split = tmp / "run-adv", tmp / "run-tau", tmp / "run-tau-split"
    train_module.main(config(*adv, "train.steps=6", f"train.output_dir={without}"))
    train_module.main(config(*tau, "train.steps=6", f"train.output_dir={whole}"))
    assert _final_unet(whole) != _final_unet(without)
    assert not (runs.latest_state(whole) / "content").exists()  # no feature net to train
    train_module.main(config(*tau, "train.steps=3", f"train.output_dir={split}"))
    train_module.main(config(*tau, "train.steps=6", f"train.output_dir={split}"))
    assert _final_unet(split) == _final_unet(whole)


def test_colour_term_judges_each_decoded_endpoint_against_its_decoded_source(
    workspace, monkeypatch
):
    """The colour term compares, per direction, the decoded predicted endpoints (with a
    gradient back to the field) with the decoded sources of the other domain they were rolled
    out from; it changes the field and resumes exactly."""
    tmp, _, config = workspace
    adv = ("adversarial.weight=0.5", "adversarial.start=1", "adversarial.ramp=2")
    adv += ("adversarial.trajectory_steps=2", "adversarial.trajectory_batch=3")
    colour = (*adv, "adversarial.colour_weight=5", "adversarial.colour_cell=4")
    seen, content, consistency = [], train_module.Trainer._content, train_module.colour_consistency

    def recording_content(self, fake, sources):
        domains = {d: s.latents for d, s in zip("ab", self.samplers, strict=True)}
        seen.append({"sources": sources, "domains": domains, "decode": self._decode, "calls": []})
        return content(self, fake, sources)

    def recording_consistency(translations, source_images, match, cell):
        seen[-1]["calls"].append((translations, source_images))
        assert (match, cell) == ("layout", 4)  # the default comparison, the configured cell
        return consistency(translations, source_images, match, cell)

    def rows_of(latents, domain):  # each row is one of the domain's training latents
        return all((domain == row).flatten(1).all(1).any() for row in latents)

    monkeypatch.setattr(train_module.Trainer, "_content", recording_content)
    monkeypatch.setattr(train_module, "colour_consistency", recording_consistency)
    without, whole, split = tmp / "run-adv", tmp / "run-colour", tmp / "run-colour-split"
    train_module.main(config(*colour, "train.steps=6", f"train.output_dir={whole}"))
    assert len(seen) == 5  # the generator term is on from step 2 (start=1)
    for step in seen:
        assert len(step["calls"]) == 2  # endpoints z_A (from B sources), then z_B (from A)
        for d, other, (translations, images) in zip("ab", "ba", step["calls"], strict=True):
            assert translations.shape == (3, 3, 16, 16) and translations.requires_grad
            sources = getattr(step["sources"], d)
            assert rows_of(sources, step["domains"][other])
            assert not rows_of(sources, step["domains"][d])
            with torch.no_grad():
                torch.testing.assert_close(images, step["decode"](sources))
    monkeypatch.undo()
    train_module.main(config(*adv, "train.steps=6", f"train.output_dir={without}"))
    assert _final_unet(whole) != _final_unet(without)
    train_module.main(config(*colour, "train.steps=3", f"train.output_dir={split}"))
    train_module.main(config(*colour, "train.steps=6", f"train.output_dir={split}"))
    assert _final_unet(split) == _final_unet(whole)


# the discriminators on decoded images, and those on latents, by name, for each space
PIXEL_CRITICS = {
    "pixels": ({"a", "b"}, set()),
    "pixels-a": ({"a"}, {"b"}),
    "latents+pixels-a": ({"a_pixels"}, {"a", "b"}),
}


@pytest.mark.parametrize(
    "space, highpass",
    [("pixels", 0), ("pixels-a", 0), ("pixels-a", 1.5), ("latents+pixels-a", 0)],
)
def test_pixel_space_discriminators_pass_their_gradient_through_the_real_decoder(
    workspace, monkeypatch, space, highpass
):
    """With adversarial.space=pixels the generator term judges images the run's own frozen
    VAE decoded with the graph kept, so the generator loss alone has a gradient in the field's
    weights (with inference's decode, which keeps no graph, it had none). With pixels-a only
    the B -> A endpoints are decoded, for fakes and reals alike; B's stay latents. With
    latents+pixels-a both domains keep their latent discriminators and A's endpoints are judged
    by a discriminator on images as well. Every discriminator's own term sends a gradient to the
    field. A high-pass view of the images passes the gradient on as well."""
    import torch.nn.functional as F

    tmp, _, config = workspace
    adv = ("adversarial.weight=0.5", "adversarial.start=1", "adversarial.ramp=2")
    adv += ("adversarial.trajectory_steps=2", "adversarial.trajectory_batch=3")
    seen, adversarial_step = [], train_module.Trainer._adversarial_step
    reals, real_view = [], train_module.Trainer._real_view

    def recording(self, *args):
        out = adversarial_step(self, *args)
        if out is not None and out.generator is not None:
            params = [p for p in self.unet.parameters() if p.requires_grad]
            norms = {}
            for name, fake in out.fake.items():  # each discriminator's term alone
                term = F.softplus(-self.adversary.disc(name, fake)).mean()
                grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
                norms[name] = sum(g.abs().sum().item() for g in grads if g is not None)
            seen.append(({name: tuple(x.shape) for name, x in out.fake.items()}, norms))
        return out

    def recording_reals(self, *args):
        out = real_view(self, *args)
        reals.append({name: tuple(x.shape) for name, x in out.items()})
        return out

    monkeypatch.setattr(train_module.Trainer, "_adversarial_step", recording)
    monkeypatch.setattr(train_module.Trainer, "_real_view", recording_reals)
    settings = (*adv, f"adversarial.space={space}", f"adversarial.pixel_highpass={highpass}")
    from translate.adversarial import Adversary

    built = []
    monkeypatch.setattr(
        train_module, "Adversary", lambda *a: built.append(Adversary(*a)) or built[-1]
    )
    train_module.main(config(*settings, "train.steps=3", f"train.output_dir={tmp / 'run-pixels'}"))
    in_pixels, on_latents = PIXEL_CRITICS[space]
    assert set(built[0].disc.nets) == in_pixels | on_latents
    assert all(built[0].disc.nets[name].highpass == highpass for name in in_pixels)
    assert len(seen) == 2
    for shapes, norms in seen:
        assert set(shapes) == in_pixels | on_latents and all(n > 0 for n in norms.values())
        assert all(shapes[name] == (3, 3, 16, 16) for name in in_pixels)  # 3 fakes, RGB
        assert all(shapes[name][:2] == (3, 4) for name in on_latents)  # 3 fakes, 4 channels
    # the reals: decoded as many as fakes, or the batch's latents of 4 channels
    assert all(reals[0][name] == (3, 3, 16, 16) for name in in_pixels)
    assert all(reals[0][name][1] == 4 for name in on_latents)


def test_joint_field_gives_each_group_of_rows_its_own_velocities():
    """The regression's rows, the rolled-out states and the identity rows share one forward
    pass; each group gets back the velocities of its own rows."""
    from types import SimpleNamespace

    from translate.flow import SourceCondition
    from translate.train import JointField, Rollout

    class Stub(torch.nn.Module):  # v(x, t) = x + t, row by row (the UNet sees t * 1000)
        def forward(self, x, time):
            return SimpleNamespace(sample=x + time.reshape(-1, 1, 1, 1) / 1000)

    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(5, 4, 2, 2, generator=g), torch.rand(5, generator=g)
    rollout = Rollout(torch.randn(6, 4, 2, 2, generator=g), torch.rand(6, generator=g), 3, x[:1])
    identity = flow_module.identity_rows(
        torch.randn(2, 4, 2, 2, generator=g), torch.randn(4, 4, 2, 2, generator=g)
    )

    def expected(x, t):
        return x + t.reshape(-1, 1, 1, 1)

    for join, rolled, ident in itertools.product((True, False), repeat=3):
        field = JointField(
            Stub(), rollout if rolled else None, join=join, identity=identity if ident else None
        )
        assert torch.allclose(field(x, t), expected(x, t))
        if join and rolled:
            assert torch.allclose(field.extra_velocity, expected(rollout.x, rollout.t))
        else:
            assert field.extra_velocity is None
        if ident:
            assert torch.allclose(field.identity_velocity, expected(*identity))
        else:
            assert field.identity_velocity is None
    with pytest.raises(ValueError, match="unconditioned"):
        JointField(Stub(), condition=SourceCondition.of(x, False), identity=identity)


def test_identity_term_stills_the_first_velocity_and_weight_zero_is_the_plain_recipe(
    workspace, folders, monkeypatch
):
    """flow.identity_weight regresses v(z_B, 0) and v(z_A, 1) onto 0, on the first
    identity_batch real latents of each domain; at weight 0 nothing of it runs, whatever its
    batch says."""
    from translate.evaluate import load_images
    from translate.model import velocity

    tmp, _, config = workspace
    calls = []  # (real A, real B of the step, identity_rows' arguments)
    plain_update, plain_rows = train_module.Trainer._update, train_module.identity_rows

    def update(self, pairing):
        calls.append([*pairing.real_ends])
        return plain_update(self, pairing)

    def rows(x_a, x_b):
        calls[-1] += [x_a, x_b]
        return plain_rows(x_a, x_b)

    monkeypatch.setattr(train_module.Trainer, "_update", update)
    monkeypatch.setattr(train_module, "identity_rows", rows)
    common = ("train.steps=12", "train.ema_decay=0", "train.log_with=tensorboard")
    out = {}
    for name, settings in (
        ("plain", ()),
        ("zero", ("flow.identity_batch=3",)),
        ("identity", ("flow.identity_weight=20", "flow.identity_batch=5")),
    ):
        out[name] = tmp / f"run-{name}"
        calls.clear()
        train_module.main(config(*settings, *common, f"train.output_dir={out[name]}"))
    assert _final_unet(out["zero"]) == _final_unet(out["plain"])
    # each step's identity rows are its first 5 real A- and B-latents, A first
    assert len(calls) == 12 and all(len(call) == 4 for call in calls)
    for real_a, real_b, x_a, x_b in calls:
        assert torch.equal(x_a, real_a[:5]) and torch.equal(x_b, real_b[:5])

    def speed(run, domain, t):  # mean squared velocity of a domain's training latents at t
        tr = Translator.from_pretrained(run / runs.FINAL, device="cpu")
        files = sorted((folders / f"train{domain}").glob("*.png"))
        z = tr.codec.encode(load_images(files, 16, None).pixels)
        return velocity(tr.unet, z, torch.full((len(z),), t)).pow(2).mean().item()

    # (on data this small the field stills the regression's own ends too, about as much)
    for domain, t in (("B", 0.0), ("A", 1.0)):
        ratio = speed(out["identity"], domain, t) / speed(out["plain"], domain, t)
        assert ratio < 0.6, (domain, t, ratio)  # 0.45-0.46 here
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logged = set()
    for folder in {p.parent for p in out["identity"].rglob("events.out.tfevents.*")}:
        logged |= set(EventAccumulator(str(folder)).Reload().Tags()["scalars"])
    assert "identity" in logged


def test_colour_term_pairs_with_the_cached_histograms_and_weight_zero_is_the_plain_recipe(
    workspace, monkeypatch
):
    """flow.colour_weight > 0 hands every plan the drawn rows' colour histograms, read from
    the colour cache next to the latents; at weight 0 none is computed, whatever the bins say."""
    from translate import coupling as coupling_module

    tmp, _, config = workspace
    seen = []
    plain_call = coupling_module.Coupler.__call__

    drawn, prepared = [], []
    plain_prepare = train_module.prepare_data

    def spy(self, x0, x1, generator, colours=None):
        seen.append(colours)
        drawn.append((x0, x1))
        return plain_call(self, x0, x1, generator, colours)

    def prepare(*args, **kwargs):
        prepared.append(plain_prepare(*args, **kwargs))
        return prepared[-1]

    monkeypatch.setattr(coupling_module.Coupler, "__call__", spy)
    monkeypatch.setattr(train_module, "prepare_data", prepare)
    out, calls = {}, {}
    for name, settings in (
        ("plain", ()),
        ("zero", ("flow.colour_bins=4",)),
        ("colour", ("flow.colour_weight=5", "flow.colour_bins=4")),
    ):
        out[name] = tmp / f"run-{name}"
        seen.clear()
        drawn.clear()
        train_module.main(config(*settings, "train.steps=3", f"train.output_dir={out[name]}"))
        calls[name] = list(seen)
        if name != "colour":
            assert not (tmp / "cache" / "colours").exists()
    assert _final_unet(out["zero"]) == _final_unet(out["plain"])
    assert len(calls["plain"]) >= 3 and all(c is None for c in calls["plain"] + calls["zero"])
    assert len(calls["colour"]) >= 3
    data = prepared[-1]  # the colour run's: each plan's histograms are its drawn rows' own
    for (x0, x1), (f0, f1) in zip(drawn, calls["colour"], strict=True):
        assert f0.shape == f1.shape == (8, 64)  # the batch's rows, 4 ** 3 bins
        for x, f, latents, cached in (
            (x0, f0, data.train_a.latents, data.train_colours[0]),
            (x1, f1, data.train_b.latents, data.train_colours[1]),
        ):
            rows = [int(torch.where((latents.float() == r).all(dim=(1, 2, 3)))[0][0]) for r in x]
            assert torch.equal(f, cached[rows])
    assert len(list((tmp / "cache" / "colours").glob("*.safetensors"))) == 2  # A and B
    assert _final_unet(out["colour"]) != _final_unet(out["plain"])


def test_augmented_discriminators_change_the_field_and_resume_exactly(workspace):
    tmp, _, config = workspace
    adv = ("adversarial.weight=0.5", "adversarial.start=1", "adversarial.ramp=2")
    adv += ("adversarial.trajectory_steps=2", "adversarial.trajectory_batch=3")
    augmented = (*adv, "adversarial.augment=translation-cutout")
    without, whole, split = tmp / "run-adv", tmp / "run-aug", tmp / "run-aug-split"
    train_module.main(config(*adv, "train.steps=6", f"train.output_dir={without}"))
    train_module.main(config(*augmented, "train.steps=6", f"train.output_dir={whole}"))
    assert _final_unet(whole) != _final_unet(without)
    train_module.main(config(*augmented, "train.steps=3", f"train.output_dir={split}"))
    train_module.main(config(*augmented, "train.steps=6", f"train.output_dir={split}"))
    assert _final_unet(split) == _final_unet(whole)


@pytest.mark.parametrize("states", ["path", "trajectory"])
def test_content_term_trains_saves_and_resumes_exactly(workspace, states):
    from translate.content import ContentTerm

    tmp, _, config = workspace
    adv = ("adversarial.weight=0.5", "adversarial.start=1", "adversarial.ramp=2")
    if states == "path":
        adv += ("adversarial.trajectory_steps=0",)
    else:
        adv += ("adversarial.trajectory_steps=2", "adversarial.trajectory_batch=3")
    nce = (*adv, "adversarial.nce_weight=1", "adversarial.nce_patches=8")
    without, whole, split = tmp / "run-adv", tmp / "run-nce", tmp / "run-nce-split"
    train_module.main(config(*adv, "train.steps=6", f"train.output_dir={without}"))
    train_module.main(config(*nce, "train.steps=6", f"train.output_dir={whole}"))
    assert _final_unet(whole) != _final_unet(without)  # the term changes the field
    assert not (runs.latest_state(without) / "content").exists()  # weight 0: nothing built
    state = runs.latest_state(whole) / "content"
    trained = load_file(str(state / ContentTerm.WEIGHTS))
    fresh = ContentTerm(4, 8, 0.07, 1e-3, "cpu", seed=0).net.state_dict()
    assert any(not torch.equal(trained[k], fresh[k]) for k in fresh)  # the features trained
    # stopped at step 3 and resumed: the feature net and its optimizer come back exactly
    train_module.main(config(*nce, "train.steps=3", f"train.output_dir={split}"))
    train_module.main(config(*nce, "train.steps=6", f"train.output_dir={split}"))
    assert _final_unet(split) == _final_unet(whole)


class Interrupted(Exception):
    pass


def _stop_after_then_resume(monkeypatch, step: int, cfg) -> None:
    """Train ``cfg``, stopping right after the state of ``step`` is saved; then run it again."""
    save = train_module.Trainer._save

    def save_then_stop(self, final):
        save(self, final)
        if self.step == step:
            raise Interrupted

    monkeypatch.setattr(train_module.Trainer, "_save", save_then_stop)
    with pytest.raises(Interrupted):
        train_module.main(cfg)
    monkeypatch.setattr(train_module.Trainer, "_save", save)
    train_module.main(cfg)


def test_reflow_rounds_train_on_their_pairs_and_resume_exactly(workspace, monkeypatch):
    from translate.reflow import ReflowPairs

    tmp, _, config = workspace
    # 2 rounds over the last 6 of 8 steps (after steps 2 and 5), adversarial term on
    reflow = ("reflow.share=0.75", "reflow.rounds=2", "reflow.nfe=2", "adversarial.start=1")
    common = (*reflow, "train.steps=8", "train.checkpoint_every=2", "train.keep_checkpoints=4")
    plain, whole, split = tmp / "run-plain", tmp / "run-reflow", tmp / "run-reflow-split"
    train_module.main(config(*common, "reflow.share=0", f"train.output_dir={plain}"))
    train_module.main(config(*common, f"train.output_dir={whole}"))
    assert _final_unet(whole) != _final_unet(plain)  # the rounds change the field
    # ... and nothing before them: up to the first round the run is the plain one, bit for bit
    unet = ("checkpoint-000002", "unet", "diffusion_pytorch_model.safetensors")
    assert Path(whole, *unet).read_bytes() == Path(plain, *unet).read_bytes()
    files = sorted(p.name for p in (whole / "reflow").iterdir())
    assert files == ["round-000002.safetensors", "round-000005.safetensors"]
    metadata = {"step": "2", "nfe": "2", "pairs": "both"}
    pairs = ReflowPairs.load(whole / "reflow" / files[0], metadata)
    assert len(pairs) == 2 * 12  # every training latent of both domains (12 each), translated
    # stopped after the state of step 4, inside the first round: the resumed run reads its pairs
    _stop_after_then_resume(monkeypatch, 4, config(*common, f"train.output_dir={split}"))
    assert _final_unet(split) == _final_unet(whole)
    # a round's pairs that are gone cannot be drawn again from a later state: one line
    (split / "reflow" / files[0]).unlink()
    for step in ("step-000006", "step-000008"):  # resume at 4 again
        (split / runs.STATE / step).rename(split / runs.STATE / f"moved-{step}")
    with pytest.raises(TranslateError, match="reflow round that began at step 2") as err:
        train_module.main(config(*common, "train.steps=9", f"train.output_dir={split}"))
    assert "\n" not in str(err.value)


def test_sample_grid_labels_name_the_rows_and_any_guidance():
    plain = ["source\nA", "A\n-> B", "source\nB", "B\n-> A"]
    assert sample_labels("A", "B") == plain
    assert sample_labels("A", "B", 2.0, 1.0) == [plain[0], "A\n-> B\nguided 2", *plain[2:]]
    assert sample_labels("A", "B", 1.0, 1.5)[3] == "B\n-> A\nguided 1.5"
    assert sample_labels("A", "B", 2.0, 2.0, 1.0, 0.5)[3] == "B\n-> A\nguided 2 on 50%"


def test_the_guide_is_the_ema_field_of_its_step_and_changes_no_training(workspace, monkeypatch):
    import json
    import shutil

    tmp, _, config = workspace
    # the guide kept at step 2 of 8, a reflow round from step 4: its pairs are drawn unguided
    common = (
        *("reflow.share=0.5", "reflow.nfe=2", "guidance.at=0.25", "train.steps=8"),
        *("train.checkpoint_every=2", "train.keep_checkpoints=4"),
    )
    off, on, split = tmp / "run-off", tmp / "run-guided", tmp / "run-split"
    train_module.main(
        config(*common, "guidance.a2b=1", "guidance.b2a=1", f"train.output_dir={off}")
    )
    labels = []  # each sample grid's row labels
    monkeypatch.setattr(
        train_module, "sample_labels", lambda *a: labels.append(a) or sample_labels(*a)
    )
    guided = (*common, "guidance.b2a=3", "train.sample_every=1")  # a grid every step
    train_module.main(config(*guided, f"train.output_dir={on}"))
    monkeypatch.undo()
    # the grids from the guide step on are guided, and their labels say so
    assert labels[0][2:] == (1.0, 1.0, 1.0, 1.0) and labels[-1][2:] == (2.0, 3.0, 1.0, 0.5)
    assert _final_unet(on) == _final_unet(off)  # inference only: the same field, bit for bit
    assert not (off / runs.GUIDE).exists() and not (off / runs.FINAL / "guide").exists()
    assert not Translator.from_pretrained(off / runs.FINAL, device="cpu").guided
    assert json.loads((on / runs.GUIDE / "guide.json").read_text()) == {"step": 2}
    weights = ("unet", "diffusion_pytorch_model.safetensors")
    kept = Path(on, runs.GUIDE, *weights).read_bytes()
    assert kept == Path(on, "checkpoint-000002", *weights).read_bytes()  # the EMA field of step 2
    assert kept == Path(on, runs.FINAL, "guide", *weights).read_bytes()
    final = Translator.from_pretrained(on / runs.FINAL, device="cpu")
    assert final.info.guidance == {"a2b": 2.0, "b2a": 3.0}  # the default A -> B weight, and 3
    assert final.info.guidance_until == {"b2a": 0.5}  # the default share below the whole path
    # stopped after the state of step 6 and resumed: the guide is read back
    _stop_after_then_resume(
        monkeypatch, 6, config(*common, "guidance.b2a=3", f"train.output_dir={split}")
    )
    assert _final_unet(split) == _final_unet(on)
    assert Path(split, runs.FINAL, "guide", *weights).read_bytes() == kept
    # a guide folder that is gone: the exported checkpoint of its step holds the same field
    guided = (*common, "guidance.b2a=3", f"train.output_dir={split}")

    def resume_at_6():
        shutil.rmtree(split / runs.FINAL)
        state = split / runs.STATE / "step-000008"
        shutil.rmtree(state.with_name("moved-step-000008"), ignore_errors=True)
        state.rename(state.with_name("moved-step-000008"))
        train_module.main(config(*guided))

    shutil.rmtree(split / runs.GUIDE)
    resume_at_6()
    assert Path(split, runs.FINAL, "guide", *weights).read_bytes() == kept
    assert Path(split, runs.GUIDE, *weights).read_bytes() == kept  # kept again for later
    # ... and with both gone, a one-line error that names the ways out
    shutil.rmtree(split / runs.GUIDE)
    shutil.rmtree(split / "checkpoint-000002")
    with pytest.raises(TranslateError, match="with a guide of step 2") as err:
        resume_at_6()
    assert "\n" not in str(err.value) and "guidance.a2b=1 guidance.b2a=1" in str(err.value)
    train_module.main(config(*guided, "guidance.a2b=1", "guidance.b2a=1"))  # the way out works
    assert not Translator.from_pretrained(split / runs.FINAL, device="cpu").guided
    # a finished guided run extended to more steps keeps the guide of its step when told so
    longer = (*common, "guidance.b2a=3", f"train.output_dir={on}", "train.steps=20")
    with pytest.raises(TranslateError, match=r"guidance.at=0.1\b") as err:
        train_module.main(config(*longer))  # the guide step would now be 5
    train_module.main(config(*longer, "guidance.at=0.1"))
    assert Path(on, runs.FINAL, "guide", *weights).read_bytes() == kept


def test_a_run_resumed_at_its_guide_step_keeps_the_guide_it_would_have_kept(workspace):
    import shutil

    tmp, _, config = workspace
    settings = ("guidance.at=0.5", "train.steps=4", "train.checkpoint_every=2")
    whole, split = tmp / "run-whole", tmp / "run-split"
    train_module.main(config(*settings, f"train.output_dir={whole}"))
    train_module.main(config(*settings, "train.steps=2", f"train.output_dir={split}"))
    shutil.rmtree(split / runs.GUIDE)  # as if killed after the state of step 2, before its guide
    shutil.rmtree(split / "checkpoint-000002")
    train_module.main(config(*settings, f"train.output_dir={split}"))
    weights = ("guide", "unet", "diffusion_pytorch_model.safetensors")
    assert (
        Path(split, runs.FINAL, *weights).read_bytes()
        == Path(whole, runs.FINAL, *weights).read_bytes()
    )


def test_reflow_pairs_are_euler_translations_whatever_the_sample_solver(workspace, monkeypatch):
    tmp, _, config = workspace
    calls = []
    plain = Translator.translate_latents

    def spy(self, latents, direction="a2b", steps=None, method=None, *args, **kwargs):
        calls.append((steps, method))
        return plain(self, latents, direction, steps, method, *args, **kwargs)

    monkeypatch.setattr(Translator, "translate_latents", spy)
    settings = ("reflow.share=0.5", "reflow.nfe=2", "train.steps=4", "train.sample_every=4")
    sampling = ("sample.method=midpoint", "sample.steps=3")
    train_module.main(config(*settings, *sampling, f"train.output_dir={tmp / 'run-solver'}"))
    # the round's pairs: reflow.nfe Euler steps; the sample grids: the sample solver
    assert (2, "euler") in calls and (3, "midpoint") in calls
    assert {method for steps, method in calls if steps == 2} == {"euler"}


def test_a_source_conditioned_run_trains_resumes_exactly_and_translates_by_seed(
    workspace, monkeypatch
):
    tmp, _, config = workspace
    # every part that calls the field: the regression, the 2-step rollouts the adversarial
    # term judges, a reflow round (after step 4) and the exported model
    common = (
        "flow.source_condition=true",
        "flow.source_noise=0.25",
        *("adversarial.start=1", "adversarial.trajectory_steps=2"),
        "adversarial.trajectory_batch=3",
        *("reflow.share=0.34", "reflow.nfe=2", "train.steps=6", "train.checkpoint_every=2"),
    )
    whole, split = tmp / "run-conditioned", tmp / "run-conditioned-split"
    train_module.main(config(*common, f"train.output_dir={whole}"))
    assert (whole / "reflow" / "round-000004.safetensors").is_file()
    _stop_after_then_resume(monkeypatch, 2, config(*common, f"train.output_dir={split}"))
    assert _final_unet(split) == _final_unet(whole)
    translator = Translator.from_pretrained(whole / runs.FINAL, device="cpu")
    assert translator.info.source_condition and translator.info.source_noise == 0.25
    assert translator.unet.config.in_channels == 8  # 4 latent channels and the 4 of the source
    sample = whole / "samples" / "step-000006.png"
    first, again, other = (translator([sample], steps=2, seed=s)[0] for s in (0, 0, 1))
    assert first.tobytes() == again.tobytes() != other.tobytes()


def test_tensorboard_logs_the_losses_and_the_sample_grids(workspace):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tmp, _, config = workspace
    out = tmp / "run-logged"
    train_module.main(config("train.log_with=tensorboard", f"train.output_dir={out}"))
    scalars, images = set(), set()  # the hyperparameters are written to a folder of their own
    for folder in {p.parent for p in out.rglob("events.out.tfevents.*")}:
        tags = EventAccumulator(str(folder)).Reload().Tags()
        scalars |= set(tags["scalars"])
        images |= set(tags["images"])
    assert "loss" in scalars
    assert "samples" in images  # the grids of steps 3 and 6


def test_finished_run_missing_its_final_checkpoint_exports_it_again(workspace):
    tmp, _, config = workspace
    cfg = config("train.steps=3", "train.checkpoint_every=3")
    final = train_module.main(cfg)
    reference = _final_unet(tmp / "run")
    import shutil

    shutil.rmtree(final)  # as a kill between the last state's rename and the export leaves it
    shutil.rmtree(tmp / "run" / "checkpoint-000003")
    assert train_module.main(cfg) == final
    assert (final / "translator.json").is_file() and _final_unet(tmp / "run") == reference
    assert (tmp / "run" / "checkpoint-000003" / "translator.json").is_file()
    assert Translator.from_pretrained(final, device="cpu").info.step == 3


def test_a_finished_run_points_to_its_labelled_grid_and_the_next_commands(workspace, capsys):
    from PIL import Image

    tmp, _, config = workspace
    cfg = config("train.steps=3", "train.checkpoint_every=3", "train.sample_every=3")
    final = train_module.main(cfg)
    grid_file = tmp / "run" / "samples" / "step-000003.png"
    for _ in range(2):  # the finished run, and the rerun that finds it done
        lines = capsys.readouterr().out.strip().splitlines()
        assert lines[-2] == f"samples: {grid_file}"
        assert lines[-1].startswith(f"next: translate-folder {final} ")
        assert f"translate-app --checkpoint {final}" in lines[-1] and "translate-eval" in lines[-1]
        train_module.main(cfg)
    with Image.open(grid_file) as image:  # 4 rows of 3 samples (16 px) and a label column
        width, height = image.size
        left = image.convert("L").crop((0, 0, width - 3 * 18 - 2, height))
    assert height == 4 * 18 + 2 and width > 3 * 18 + 2 + 10
    assert left.getextrema()[0] < 128  # the labels are written there


def test_training_follows_linked_folders_and_reports_broken_links(workspace, folders, capsys):
    import shutil

    from translate.data import folder_source

    tmp, _, config = workspace
    root = tmp / "linked-data"
    shutil.copytree(folders, root)
    extra = tmp / "more-a"
    shutil.move(str(root / "trainA"), extra)  # trainA's images now live behind a link
    (root / "trainA").mkdir()
    (root / "trainA" / "sub").symlink_to(extra, target_is_directory=True)
    (root / "trainA" / "gone.png").symlink_to(tmp / "missing.png")
    source = folder_source(root)
    assert len(source.split("train")[0]) == len(folder_source(folders).split("train")[0])
    train_module.main(config(f"data.root={root}", "train.steps=1", "train.checkpoint_every=1"))
    assert f"skipped 1 broken symbolic link(s), e.g. {root / 'trainA' / 'gone.png'}" in (
        capsys.readouterr().out
    )


def test_a_kill_during_rotation_never_leaves_a_half_deleted_checkpoint(workspace, monkeypatch):
    tmp, _, config = workspace
    cfg = config("train.steps=9", "train.checkpoint_every=3", "train.keep_checkpoints=1")
    real_rmtree = runs.shutil.rmtree

    def killed_midway(path, ignore_errors=False):
        path = type(tmp)(path)
        if path.exists() and (path / "vae").is_dir():
            real_rmtree(path / "vae")  # one part gone, then the process dies
            raise KeyboardInterrupt
        real_rmtree(path, ignore_errors=ignore_errors)

    monkeypatch.setattr(runs.shutil, "rmtree", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        train_module.main(cfg)
    monkeypatch.setattr(runs.shutil, "rmtree", real_rmtree)
    for _, folder in runs.numbered(tmp / "run", "checkpoint"):  # complete or absent
        assert {"translator.json", "unet", "vae"} <= {p.name for p in folder.iterdir()}
        Translator.from_pretrained(folder, device="cpu")
    assert train_module.main(cfg) == tmp / "run" / runs.FINAL
    assert not [p for p in (tmp / "run").iterdir() if p.name.startswith(".old-")]


def test_exploded_weights_are_never_saved_and_the_advice_works(workspace):
    tmp, _, config = workspace
    blown = ("train.lr=1e9", "train.steps=4", "train.checkpoint_every=2")
    with pytest.raises(TranslateError, match="stopped without saving.*lower train.lr"):
        train_module.main(config(*blown))
    assert not runs.numbered(tmp / "run", "checkpoint")
    assert runs.latest_state(tmp / "run") is None
    # the advice, followed: the same folder with a sane learning rate trains to the end
    final = train_module.main(config("train.steps=4", "train.checkpoint_every=2"))
    unet = Translator.from_pretrained(final, device="cpu").unet
    assert max(p.abs().max().item() for p in unet.parameters()) < train_module.WEIGHT_LIMIT


def test_a_damaged_newest_state_is_set_aside_and_the_older_one_resumes(workspace, capsys):
    tmp, _, config = workspace
    train_module.main(config("train.steps=6", "train.checkpoint_every=3"))
    newest = runs.latest_state(tmp / "run")
    assert newest.name == "step-000006"
    model = newest / "model.safetensors"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])  # cut to half its size
    final = train_module.main(config("train.steps=9", "train.checkpoint_every=3"))
    out = capsys.readouterr().out
    assert "step-000006 does not load" in out and "resumed from" in out and "step-000003" in out
    assert (tmp / "run" / "state" / "damaged-step-000006" / "model.safetensors").is_file()
    assert Translator.from_pretrained(final, device="cpu").info.step == 9
    # a named state that does not load is one line, not a traceback
    damaged = tmp / "run" / "state" / "damaged-step-000006"
    with pytest.raises(TranslateError, match="cannot resume from .*damaged-step-000006"):
        train_module.main(config("train.steps=12", f"train.resume={damaged}"))


def test_a_state_written_on_another_kind_of_device_resumes(workspace, capsys):
    import json

    from safetensors.torch import load_file, save_file

    tmp, _, config = workspace
    train_module.main(config("train.steps=3", "train.checkpoint_every=3"))
    state = runs.latest_state(tmp / "run")
    info = json.loads((state / "trainer_state.json").read_text())
    assert info == {"step": 3, "device": "cpu"}
    # what a CUDA run leaves: its device-side generators hold philox states (seed, offset)
    (state / "trainer_state.json").write_text(json.dumps({**info, "device": "cuda"}))
    streams = load_file(str(state / "generators_0.safetensors"))
    for name in ("path", "rollout"):
        streams[name] = torch.zeros(16, dtype=torch.uint8)
    save_file(streams, str(state / "generators_0.safetensors"))
    final = train_module.main(config("train.steps=6", "train.checkpoint_every=3"))
    out = capsys.readouterr().out
    assert "was written on cuda; resuming on cpu" in out and "resumed from" in out
    assert not (tmp / "run" / "state" / "damaged-step-000003").exists()  # not set aside
    assert Translator.from_pretrained(final, device="cpu").info.step == 6


@pytest.mark.parametrize("precision, expected", [("bf16", torch.bfloat16), ("no", None)])
def test_reflow_pairs_are_drawn_in_the_runs_precision(workspace, monkeypatch, precision, expected):
    from accelerate.state import AcceleratorState

    tmp, _, config = workspace
    seen = set()  # the autocast dtype (None: off) of every reflow translation
    plain = Translator.translate_latents

    def spy(self, latents, direction="a2b", steps=None, method=None, *args, **kwargs):
        if steps == 2:  # reflow.nfe; the sample grids take 3
            on = torch.is_autocast_enabled("cpu")
            seen.add(torch.get_autocast_dtype("cpu") if on else None)
        return plain(self, latents, direction, steps, method, *args, **kwargs)

    monkeypatch.setattr(Translator, "translate_latents", spy)
    settings = ("reflow.share=0.5", "reflow.nfe=2", "train.steps=4", "sample.steps=3")
    out = tmp / f"run-{precision}"
    # accelerate keeps one precision per process: start and leave with a fresh state
    AcceleratorState._reset_state(reset_partial_state=True)
    try:
        train_module.main(
            config(*settings, f"train.mixed_precision={precision}", f"train.output_dir={out}")
        )
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    assert seen == {expected}
    assert (out / "reflow" / "round-000002.safetensors").is_file()


def test_the_ema_decay_is_a_cap_on_its_warm_up_schedule(workspace):
    """The EMA's decay at optimizer step n is min(train.ema_decay, n / (9 + n)): over 3 steps
    the warm-up reaches 3/12, so a cap of 0.25 or more gives the same EMA bit for bit (the
    config's comment and docs/SHARPNESS.md rely on it), and a lower cap changes it."""
    tmp, _, config = workspace
    out = {}
    for decay in ("0.999", "0.25", "0.15"):
        out[decay] = tmp / f"run-{decay}"
        settings = ("train.steps=3", f"train.ema_decay={decay}", "train.sample_every=3")
        train_module.main(config(*settings, f"train.output_dir={out[decay]}"))
    assert _final_unet(out["0.999"]) == _final_unet(out["0.25"])
    assert _final_unet(out["0.15"]) != _final_unet(out["0.999"])  # binds at step 2 (2/11)
    live = [load_file(str(runs.latest_state(o) / "model.safetensors")) for o in out.values()]
    assert all(torch.equal(live[0][k], other[k]) for other in live[1:] for k in live[0])
