import json

import numpy as np
import pytest
import torch
from PIL import Image

from translate import Translator
from translate.errors import TranslateError
from translate.model import velocity


@pytest.fixture
def translator(tiny_vae):
    from helpers import tiny_translator

    return tiny_translator(tiny_vae, "circles", "squares")


@pytest.fixture
def images():
    import numpy as np
    from helpers import draw_shape

    rng = np.random.default_rng(1)
    return [draw_shape("A", 30, rng), draw_shape("A", 24, rng).resize((40, 24))]


def test_velocity_feeds_float_time_times_1000():
    seen = {}

    class Probe(torch.nn.Module):
        def forward(self, x, timesteps):
            seen["t"] = timesteps
            return type("Out", (), {"sample": x})()

    velocity(Probe(), torch.zeros(3, 4, 2, 2), torch.tensor(0.25))
    assert seen["t"].dtype == torch.float32 and seen["t"].tolist() == [250.0] * 3


def test_call_both_directions(translator, images):
    for direction in ("a2b", "b2a"):
        out = translator(images, direction=direction, steps=2)
        assert len(out) == 2 and all(o.size == (16, 16) for o in out)


def test_deterministic_and_methods(translator, images):
    a = translator(images, steps=2, method="euler")
    b = translator(images, steps=2, method="euler")
    assert [im.tobytes() for im in a] == [im.tobytes() for im in b]
    assert len(translator(images, steps=2, method="dopri5")) == 2


def test_trajectory_frames(translator, images):
    frames = translator(images, steps=3, return_trajectory=True)
    assert len(frames) == 2 and len(frames[0]) == 4 and isinstance(frames[0][0], Image.Image)
    # each trajectory carries the times of its frames, so no caller recomputes them
    assert frames[0].times == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0])
    (back,) = translator(images[:1], "b2a", steps=2, strength=0.5, return_trajectory=True)
    assert back.times == pytest.approx([1.0, 0.75, 0.5]) and list(back) == back.frames


def test_strength_and_direction_times(translator):
    z = torch.randn(1, 4, 8, 8)
    sol = translator.translate_latents(z, "b2a", steps=2, strength=0.5, return_trajectory=True)
    assert sol.times.tolist() == [1.0, 0.75, 0.5]
    with pytest.raises(ValueError, match="strength"):
        translator.translate_latents(z, strength=0)
    with pytest.raises(ValueError, match="direction"):
        translator.translate_latents(z, direction="sideways")


def test_save_and_load_round_trip(translator, images, tmp_path):
    translator.save_pretrained(tmp_path / "ckpt")
    loaded = Translator.from_pretrained(tmp_path / "ckpt", device="cpu")
    assert loaded.domains == ("circles", "squares") and loaded.resolution == 16
    assert json.loads((tmp_path / "ckpt" / "translator.json").read_text())["vae"] == {"path": "vae"}
    assert (tmp_path / "ckpt" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    a = translator(images, steps=2)
    b = loaded(images, steps=2)
    assert [im.tobytes() for im in a] == [im.tobytes() for im in b]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]
    assert loaded.examples == {}


def test_examples_round_trip(translator, images, tmp_path):
    translator.examples = {"a2b": images, "b2a": images[:1]}
    try:
        translator.save_pretrained(tmp_path / "ckpt")
    finally:
        translator.examples = {}
    loaded = Translator.from_pretrained(tmp_path / "ckpt", device="cpu")
    assert {k: len(v) for k, v in loaded.examples.items()} == {"a2b": 2, "b2a": 1}
    assert loaded.examples["a2b"][1].tobytes() == images[1].convert("RGB").tobytes()


def test_load_errors(translator, tmp_path):
    with pytest.raises(TranslateError, match="checkpoint not found"):
        Translator.from_pretrained(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TranslateError, match="not a translate checkpoint"):
        Translator.from_pretrained(tmp_path / "empty")
    translator.save_pretrained(tmp_path / "ckpt")
    meta = json.loads((tmp_path / "ckpt" / "translator.json").read_text())
    meta["format_version"] = 99
    (tmp_path / "ckpt" / "translator.json").write_text(json.dumps(meta))
    with pytest.raises(TranslateError, match="upgrade"):
        Translator.from_pretrained(tmp_path / "ckpt")


def test_native_size_keeps_each_input_size(translator):
    import numpy as np
    from helpers import draw_shape

    rng = np.random.default_rng(2)
    inputs = [draw_shape("A", 30, rng).resize(size) for size in [(40, 24), (17, 53), (16, 16)]]
    outputs = translator(inputs, steps=2, size="native")
    assert [o.size for o in outputs] == [(40, 24), (17, 53), (16, 16)]
    frames = translator(inputs[:1], steps=2, size="native", return_trajectory=True)
    assert [f.size for f in frames[0]] == [(40, 24)] * 3


def test_working_size_rounds_and_caps(translator):
    m = translator.size_multiple  # VAE factor 2 x UNet factor 2
    assert m == 4
    assert translator.working_size(40, 24) == (28, 16)  # short side 16, 26.7 -> 28
    w, h = translator.working_size(1000, 10)
    assert h == 16 and w == 16 * 4  # aspect capped at MAX_ASPECT
    with pytest.raises(ValueError, match="native"):
        translator.prepare(Image.new("RGB", (8, 8)), size="huge")


def test_vae_dtype_choices(translator, images, tmp_path):
    translator.save_pretrained(tmp_path / "ckpt")
    auto = Translator.from_pretrained(tmp_path / "ckpt", device="cpu")
    assert auto.codec.dtype == torch.float32  # the CPU default
    half = Translator.from_pretrained(tmp_path / "ckpt", device="cpu", vae_dtype="bfloat16")
    assert half.codec.dtype == torch.bfloat16
    a, b = auto(images, steps=2), half(images, steps=2)
    assert [im.size for im in a] == [im.size for im in b]
    # bfloat16 encode and decode stay close to float32 (8-bit images, mean absolute error)
    import numpy as np

    pairs = zip(a, b, strict=True)
    error = np.mean([np.abs(np.asarray(x, float) - np.asarray(y, float)).mean() for x, y in pairs])
    assert error < 8
    with pytest.raises(TranslateError, match="vae_dtype"):
        Translator.from_pretrained(tmp_path / "ckpt", device="cpu", vae_dtype="int8")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("resolution", "abc", '"resolution" must be a non-negative integer'),
        ("vae", None, '"vae" must name a "path" or a "pretrained" VAE'),
        ("domain_a", 3, '"domain_a" must be a string'),
    ],
)
def test_damaged_translator_json_is_one_line(translator, tmp_path, key, value, message):
    translator.save_pretrained(tmp_path / "ckpt")
    meta = json.loads((tmp_path / "ckpt" / "translator.json").read_text())
    meta[key] = value
    (tmp_path / "ckpt" / "translator.json").write_text(json.dumps(meta))
    with pytest.raises(TranslateError, match=message) as err:
        Translator.from_pretrained(tmp_path / "ckpt", device="cpu")
    assert "\n" not in str(err.value) and "translator.json" in str(err.value)


def test_a_corrupt_example_is_skipped_with_a_warning(translator, images, tmp_path):
    translator.examples = {"a2b": images}
    try:
        translator.save_pretrained(tmp_path / "ckpt")
    finally:
        translator.examples = {}
    first = sorted((tmp_path / "ckpt" / "examples" / "a2b").glob("*.png"))[0]
    first.write_bytes(first.read_bytes()[:40])  # truncated
    with pytest.warns(UserWarning, match="skipped unreadable example"):
        loaded = Translator.from_pretrained(tmp_path / "ckpt", device="cpu")
    assert len(loaded.examples["a2b"]) == 1 and loaded(images[:1], steps=1)


@pytest.mark.parametrize(
    "setting, value, match",
    [
        ("direction", "sideways", "direction must be one of a2b, b2a"),
        ("method", "heun", "method must be one of euler, midpoint, rk4, dopri5"),
        ("steps", 0, "steps must be a positive integer"),
        ("steps", 2.5, "steps must be a positive integer"),
        ("strength", 0.0, r"strength must be in \(0, 1\]"),
        ("seed", -1, "seed must be a non-negative integer"),
        ("seed", 0.5, "seed must be a non-negative integer"),
        ("guidance", -0.5, r"guidance must be in \[0, 10\]"),
        ("guidance", float("nan"), r"guidance must be in \[0, 10\]"),
    ],
)
def test_translation_options_follow_one_rule_in_every_entry_point(setting, value, match):
    from translate.convert import ConvertOptions
    from translate.evaluate import EvalOptions
    from translate.pipeline import TranslationOptions
    from translate.serving import check_settings

    with pytest.raises(ValueError, match=match):
        TranslationOptions(**{setting: value})
    defaults = {"direction": "a2b", "steps": 8, "method": "euler", "strength": 1.0, "seed": 0}
    with pytest.raises(ValueError, match=match):  # the app
        check_settings(**{**defaults, setting: value})
    with pytest.raises(TranslateError, match=match):  # translate-folder
        ConvertOptions(**{setting: value})
    if setting == "guidance":  # translate-eval
        with pytest.raises(TranslateError, match=match):
            EvalOptions(guidance=value)
    elif setting not in ("strength", "seed"):
        plural = {"direction": "directions", "method": "methods", "steps": "steps"}[setting]
        with pytest.raises(TranslateError, match=match):
            EvalOptions(**{plural: (value,)})


@pytest.fixture
def conditioned(tiny_vae):
    from helpers import tiny_translator

    return tiny_translator(tiny_vae, "circles", "squares", source_noise=0.5)


def test_a_conditioned_field_sees_the_clean_source_and_its_direction(conditioned):
    from translate.flow import SourceCondition

    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.full((2,), 0.5)
    source = SourceCondition.of(torch.zeros_like(x), False)
    v = conditioned.field(x, t, source)
    assert v.shape == x.shape
    assert not torch.equal(v, conditioned.field(x, t, SourceCondition.of(x, False)))
    other_way = SourceCondition.of(torch.zeros_like(x), True)
    assert not torch.equal(v, conditioned.field(x, t, other_way))
    with pytest.raises(ValueError):  # a conditioned UNet cannot run without its condition
        conditioned.field(x, t)


def test_a_seed_fixes_a_source_noised_translation_and_other_seeds_vary_it(conditioned, images):
    def png(outputs):
        return [im.tobytes() for im in outputs]

    for direction in ("a2b", "b2a"):
        first = conditioned(images, direction, steps=2, seed=0)
        assert png(first) == png(conditioned(images, direction, steps=2, seed=0))
        assert png(first) != png(conditioned(images, direction, steps=2, seed=1))
        # an image's noise does not depend on the batch it is translated in (the outputs are
        # equal up to the float rounding of batched convolutions)
        (alone,) = conditioned(images[1:], direction, steps=2, seed=0)
        other = conditioned(images[1:], direction, steps=2, seed=1)[0]
        gap = np.abs(np.asarray(first[1], int) - np.asarray(alone, int)).max()
        assert gap <= 2 < np.abs(np.asarray(first[1], int) - np.asarray(other, int)).max()


def test_a_plain_model_ignores_the_seed(translator, images):
    a, b = (translator(images, steps=2, seed=seed) for seed in (0, 7))
    assert [im.tobytes() for im in a] == [im.tobytes() for im in b]


def test_a_conditioned_checkpoint_round_trips_and_refuses_a_mismatched_config(
    conditioned, images, tmp_path
):
    conditioned.save_pretrained(tmp_path / "ckpt")
    loaded = Translator.from_pretrained(tmp_path / "ckpt", device="cpu")
    assert loaded.info.source_condition and loaded.info.source_noise == 0.5
    expected = [im.tobytes() for im in conditioned(images, steps=2, seed=3)]
    assert [im.tobytes() for im in loaded(images, steps=2, seed=3)] == expected
    meta_file = tmp_path / "ckpt" / "translator.json"
    meta = json.loads(meta_file.read_text())
    meta["source_condition"] = False  # the UNet takes 8 channels, the config now says 4
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(TranslateError, match="UNet expects 8 input channels") as err:
        Translator.from_pretrained(tmp_path / "ckpt", device="cpu")
    assert "\n" not in str(err.value)
    meta.update(source_condition=True, source_noise=-1)
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(TranslateError, match='"source_noise" must be a non-negative number'):
        Translator.from_pretrained(tmp_path / "ckpt", device="cpu")


def test_each_direction_takes_its_own_default_steps(translator, images, tmp_path):
    """sample.<direction>_steps, where set, replaces sample.steps for that direction alone: in
    calls, the app's requests and the model card."""
    from helpers import draw_shape

    from translate.serving import model_card, served_steps, translate_upload

    translator.info.config = {"sample": {"steps": 2, "a2b_steps": None, "b2a_steps": 5}}
    assert (translator.default_steps("a2b"), translator.default_steps("b2a")) == (2, 5)
    forward = translator(images[:1], "a2b", return_trajectory=True)[0]
    backward = translator(images[:1], "b2a", return_trajectory=True)[0]
    assert (len(forward), len(backward)) == (3, 6)  # the source and each step
    assert backward.times == pytest.approx([1.0, 0.8, 0.6, 0.4, 0.2, 0.0])
    assert [im.tobytes() for im in translator(images, "b2a")] == [
        im.tobytes() for im in translator(images, "b2a", steps=5)
    ]
    assert "| Default steps | A→B 2, B→A 5 (euler) |" in model_card(translator)
    upload = tmp_path / "upload.png"
    draw_shape("B", 20, np.random.default_rng(0)).save(upload)
    assert len(translate_upload(translator, upload, "b2a").frames) == 6
    assert len(translate_upload(translator, upload, "a2b").frames) == 3
    assert (served_steps(translator, "a2b"), served_steps(translator, "b2a")) == (2, 5)
    # a broken per-direction count falls back to sample.steps, not to the fallback
    translator.info.config = {"sample": {"steps": 3, "b2a_steps": "many", "a2b_steps": 0}}
    assert (translator.default_steps("a2b"), translator.default_steps("b2a")) == (3, 3)


def test_a_call_without_steps_takes_the_checkpoint_sample_steps(translator, images, tmp_path):
    from helpers import draw_shape

    from translate.pipeline import FALLBACK_STEPS
    from translate.serving import MAX_STEPS, model_card, translate_upload

    assert translator.default_steps("a2b") == FALLBACK_STEPS  # a config without sample.steps
    with pytest.raises(ValueError, match="direction must be one of"):
        translator.default_steps("sideways")
    translator.info.config = {"sample": {"steps": 3}}
    (path,) = translator(images[:1], return_trajectory=True)
    assert len(path) == 4  # the source and 3 steps
    translator.save_pretrained(tmp_path / "ckpt")
    loaded = Translator.from_pretrained(tmp_path / "ckpt", device="cpu")
    assert loaded.default_steps("a2b") == loaded.default_steps("b2a") == 3
    assert "| Default steps | 3 (euler) |" in model_card(loaded)
    solution = loaded.translate_latents(torch.randn(1, 4, 8, 8), return_trajectory=True)
    assert solution.times.tolist() == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0])
    assert [im.tobytes() for im in loaded(images)] == [
        im.tobytes() for im in loaded(images, steps=3)
    ]
    upload = tmp_path / "upload.png"
    draw_shape("A", 20, np.random.default_rng(0)).save(upload)
    assert len(translate_upload(loaded, upload).frames) == 4  # the app and its API
    broken = ({"sample": {"steps": "many"}}, {"sample": None}, {"sample": {"steps": 0}})
    for config in (*broken, {"sample": {"steps": True}}, {"sample": {"steps": 2.5}}):
        translator.info.config = config
        assert translator.default_steps("a2b") == FALLBACK_STEPS
    # a request without steps may not hold the queue longer than one that names them
    translator.info.config = {"sample": {"steps": MAX_STEPS + 1000}}
    assert len(translate_upload(translator, upload).frames) == MAX_STEPS + 1
    assert f"| Default steps | {MAX_STEPS} (euler) |" in model_card(translator)


def test_a_call_without_a_method_takes_the_checkpoint_sample_method(translator, tmp_path):
    from helpers import draw_shape

    from translate.pipeline import FALLBACK_METHOD
    from translate.serving import model_card, translate_upload

    assert translator.default_method == FALLBACK_METHOD == "euler"  # a config without one
    translator.info.config = {"sample": {"steps": 2, "method": "midpoint"}}
    translator.save_pretrained(tmp_path / "ckpt")
    loaded = Translator.from_pretrained(tmp_path / "ckpt", device="cpu")
    assert loaded.default_method == "midpoint"
    assert "| Default steps | 2 (midpoint) |" in model_card(loaded)
    latents = torch.randn(2, 4, 8, 8)
    solution = loaded.translate_latents(latents)
    assert solution.nfe == 4  # 2 midpoint steps, 2 field evaluations each
    assert torch.equal(solution.x, loaded.translate_latents(latents, method="midpoint").x)
    assert not torch.equal(solution.x, loaded.translate_latents(latents, method="euler").x)
    upload = tmp_path / "upload.png"
    draw_shape("A", 20, np.random.default_rng(0)).save(upload)
    served = translate_upload(loaded, upload).image.tobytes()
    assert served == translate_upload(loaded, upload, method="midpoint").image.tobytes()
    for config in ({"sample": {"method": "leapfrog"}}, {"sample": {"method": 3}}, {"sample": 1}):
        translator.info.config = config
        assert translator.default_method == FALLBACK_METHOD


@pytest.fixture
def guided(tiny_vae):
    from helpers import tiny_translator

    return tiny_translator(tiny_vae, guidance=2.0)


def test_autoguidance_extrapolates_from_the_guide_through_the_field(guided):
    x, t = torch.randn(2, 4, 8, 8), torch.full((2,), 0.3)
    v, g = velocity(guided.unet, x, t), velocity(guided.guide, x, t)
    assert not torch.allclose(v, g)  # two different random UNets
    assert torch.allclose(guided.field(x, t, guidance=2), g + 2.0 * (v - g), atol=1e-6)
    assert torch.equal(guided.field(x, t), v)  # weight 1: the field alone, bit for bit
    assert torch.allclose(guided.field(x, t, guidance=0), g, atol=1e-7)
    assert torch.allclose(guided.velocity_field(x, "a2b")(x, t), g + 2.0 * (v - g), atol=1e-6)
    assert torch.equal(guided.velocity_field(x, "b2a")(x, t), v)  # B -> A unguided
    assert (guided.default_guidance("a2b"), guided.default_guidance("b2a")) == (2.0, 1.0)
    z = torch.randn(2, 4, 8, 8)
    for direction, weight in (("a2b", 2.0), ("b2a", 1.0)):  # without guidance: the checkpoint's
        default = guided.translate_latents(z, direction, steps=2).x
        assert torch.equal(default, guided.translate_latents(z, direction, 2, guidance=weight).x)
        other = guided.translate_latents(z, direction, 2, guidance=3.0 - weight).x
        assert not torch.allclose(default, other)


def test_guidance_until_guides_only_the_first_part_of_a_path(guided, tmp_path):
    """B -> A guided until 0.5: its steps from t = 1 down to just above t = 0.5 are guided and
    the rest is the field alone; A -> B (no share stored) is guided on its whole path."""
    from translate.serving import model_card

    guided.info.guidance = {"a2b": 2.0, "b2a": 2.0}
    guided.info.guidance_until = {"b2a": 0.5}
    x = torch.randn(3, 4, 8, 8)

    def expected(t: float, weight: float) -> torch.Tensor:
        return guided.field(x, torch.full((3,), t), guidance=weight)

    b2a, a2b = guided.velocity_field(x, "b2a"), guided.velocity_field(x, "a2b")
    for t, weight in ((1.0, 2.0), (0.75, 2.0), (0.51, 2.0), (0.5, 1.0), (0.25, 1.0)):
        assert torch.equal(b2a(x, torch.full((3,), t)), expected(t, weight)), t
        assert torch.equal(a2b(x, torch.full((3,), t)), expected(t, 2.0)), t
    # a step that should start at 0.5 but reads a float32 rounding above it is not guided
    assert torch.equal(b2a(x, torch.tensor(0.50000006)), expected(0.50000006, 1.0))
    rows = torch.tensor([0.9, 0.3, 0.6])  # rows at different times: each by its own
    mixed = b2a(x, rows)
    for i, weight in enumerate((2.0, 1.0, 2.0)):
        alone = guided.field(x[i : i + 1], rows[i : i + 1], guidance=weight)
        assert torch.allclose(mixed[i : i + 1], alone, atol=1e-5)
    # 4 Euler steps B -> A: the first two guided, the last two not
    z = guided.translate_latents(x, "b2a", steps=4).x
    y = x
    for t, weight in ((1.0, 2.0), (0.75, 2.0), (0.5, 1.0), (0.25, 1.0)):
        y = y - 0.25 * guided.field(y, torch.full((3,), t), guidance=weight)
    assert torch.allclose(z, y, atol=1e-5)
    assert "B→A 2 on the first 50% of the path" in model_card(guided)
    # the solver is told where the guided part ends (dopri5 steps across it: test_solvers)
    from translate import pipeline

    jumps = []
    real_integrate = pipeline.integrate

    def recording(*args, **kwargs):
        jumps.append(kwargs.get("jump_times"))
        return real_integrate(*args, **kwargs)

    pipeline.integrate = recording
    try:
        guided.translate_latents(x, "b2a", 2)
        guided.translate_latents(x, "a2b", 2)  # A -> B: its whole path, no jump
        guided.translate_latents(x, "b2a", 2, guidance=1)  # the field alone: no jump
    finally:
        pipeline.integrate = real_integrate
    assert jumps == [[0.5], [], []]
    guided.save_pretrained(tmp_path / "ckpt")
    loaded = Translator.from_pretrained(tmp_path / "ckpt", device="cpu")
    assert loaded.info.guidance_until == {"b2a": 0.5}
    assert torch.equal(loaded.translate_latents(x, "b2a", steps=4).x, z)
    meta = json.loads((tmp_path / "ckpt" / "translator.json").read_text())
    for bad in ({"b2a": 0}, {"b2a": 1.5}, {"b2a": "half"}, {"sideways": 0.5}, [0.5]):
        (tmp_path / "ckpt" / "translator.json").write_text(
            json.dumps({**meta, "guidance_until": bad})
        )
        with pytest.raises(TranslateError, match="guidance_until") as err:
            Translator.from_pretrained(tmp_path / "ckpt", device="cpu")
        assert "\n" not in str(err.value)


def test_a_guided_checkpoint_round_trips_and_a_missing_guide_is_one_line(guided, tmp_path):
    from translate.serving import model_card

    guided.save_pretrained(tmp_path / "ckpt")
    loaded = Translator.from_pretrained(tmp_path / "ckpt", device="cpu")
    assert loaded.info.guidance == {"a2b": 2.0, "b2a": 1.0} and loaded.guide is not None
    assert "| Autoguidance | A→B 2, B→A 1 (two UNets per guided step) |" in model_card(loaded)
    x, t = torch.randn(2, 4, 8, 8), torch.full((2,), 0.6)
    assert torch.equal(loaded.field(x, t, guidance=2), guided.field(x, t, guidance=2))
    weights = tmp_path / "ckpt" / "guide" / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    with pytest.raises(TranslateError, match="needs the guide UNet") as err:
        Translator.from_pretrained(tmp_path / "ckpt", device="cpu")
    assert "\n" not in str(err.value) and "damaged checkpoint" in str(err.value)


def test_a_checkpoint_without_a_guide_translates_with_its_field_alone(translator, tmp_path):
    from translate.pipeline import TranslatorInfo
    from translate.serving import model_card

    assert not translator.guided and translator.guide is None
    assert "Autoguidance" not in model_card(translator)
    translator.save_pretrained(tmp_path / "ckpt")
    assert not (tmp_path / "ckpt" / "guide").exists()
    meta = json.loads((tmp_path / "ckpt" / "translator.json").read_text())
    assert "guidance" not in meta and "guidance_until" not in meta  # as earlier versions wrote
    z = torch.randn(1, 4, 8, 8)
    plain = translator.translate_latents(z, steps=2).x
    assert torch.equal(plain, translator.translate_latents(z, steps=2, guidance=1).x)
    with pytest.raises(ValueError, match="needs a guide"):
        translator.translate_latents(z, steps=2, guidance=2)
    info = TranslatorInfo("a", "b", 16, guidance={"b2a": 2.0})
    with pytest.raises(TranslateError, match="needs a guide UNet"):
        Translator(translator.unet, translator.codec, info, "cpu")
    meta = json.loads((tmp_path / "ckpt" / "translator.json").read_text())
    for bad, message in (
        (2, "must map a2b and b2a"),
        ({"sideways": 2}, "must map a2b and b2a"),
        ({"a2b": "2"}, r"weights must be in \[0, 10\]"),
        ({"a2b": -1}, r"weights must be in \[0, 10\]"),
    ):
        (tmp_path / "ckpt" / "translator.json").write_text(json.dumps({**meta, "guidance": bad}))
        with pytest.raises(TranslateError, match=message):
            Translator.from_pretrained(tmp_path / "ckpt", device="cpu")
    guidance = {"a2b": 2}
    (tmp_path / "ckpt" / "translator.json").write_text(json.dumps({**meta, "guidance": guidance}))
    with pytest.raises(TranslateError, match="needs the guide UNet"):  # no guide/ folder
        Translator.from_pretrained(tmp_path / "ckpt", device="cpu")
