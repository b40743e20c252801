import pytest

from translate.config import Config, guide_step, load_config, to_dict
from translate.errors import ConfigError


def test_default_yaml_equals_builtin_defaults(repo):
    assert to_dict(load_config(repo / "configs" / "default.yaml")) == to_dict(Config())


@pytest.mark.parametrize("name", ["default", "tiny", "celeba_male2female", "folders_example"])
def test_shipped_configs_load(repo, name):
    load_config(repo / "configs" / f"{name}.yaml")


def test_overrides_are_typed():
    cfg = load_config(
        None, ["train.steps=7", "flow.sigma=0.1", "model.attention=[false,false,true]"]
    )
    assert (
        cfg.train.steps == 7
        and cfg.flow.sigma == 0.1
        and cfg.model.attention == [False, False, True]
    )


def test_each_direction_has_its_own_step_count():
    cfg = load_config(None, [])
    assert (cfg.sample.steps_of("a2b"), cfg.sample.steps_of("b2a")) == (4, 8)
    cfg = load_config(None, ["sample.steps=3", "sample.b2a_steps=null"])
    assert (cfg.sample.steps_of("a2b"), cfg.sample.steps_of("b2a")) == (3, 3)
    cfg = load_config(None, ["sample.a2b_steps=6"])
    assert (cfg.sample.steps_of("a2b"), cfg.sample.steps_of("b2a")) == (6, 8)


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["train.stepz=3"])
    message = str(err.value)
    assert "train.stepz" in message and "train.steps" in message and "\n" not in message


def test_unknown_section():
    with pytest.raises(ConfigError, match="valid keys here: data, vae"):
        load_config(None, ["nope=1"])


def test_wrong_type_is_one_line():
    with pytest.raises(ConfigError, match="train.batch_size") as err:
        load_config(None, ["train.batch_size=many"])
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "override, match",
    [
        ("flow.objective=gan", "ot-cfm, i-cfm, sb-cfm"),
        ("data.source=imagenet", "emoji, folders, celeba"),
        ("sample.method=heun", "euler, midpoint, rk4, dopri5"),
        ("train.steps=0", "positive"),
        ("sample.steps=0", "sample.steps must be positive"),
        ("sample.b2a_steps=0", "sample.b2a_steps must be positive"),
        ("sample.a2b_steps=-2", "sample.a2b_steps must be positive"),
        ("model.attention=[true]", "one entry per"),
        ("flow.sinkhorn_reg=-0.1", "sinkhorn_reg must be >= 0"),
        ("flow.unbalanced_tau=0", "unbalanced_tau must lie in"),
        ("flow.unbalanced_tau=1.5", "unbalanced_tau must lie in"),
        ("flow.unbalanced_reg=0", "unbalanced_reg must be > 0"),
        ("flow.high_frequency_weight=-1", "high_frequency_weight must be >= 0"),
        ("train.lr_schedule=step", "constant, cosine, linear"),
        ("flow.source_noise=0.25", "needs flow.source_condition=true"),
        ("flow.identity_weight=-1", "identity_weight must be >= 0"),
        ("flow.identity_weight=nan", "identity_weight must be >= 0"),
        ("flow.identity_batch=0", "identity_batch must be >= 1"),
        ("flow.colour_weight=-1", "colour_weight must be >= 0"),
        ("flow.colour_weight=inf", "colour_weight must be >= 0"),
        ("flow.colour_bins=1", "colour_bins must lie in"),
        ("flow.colour_bins=17", "colour_bins must lie in"),
        ("flow.colour_weight=1 flow.objective=i-cfm", "pairs without a cost"),
        ("flow.colour_weight=1 flow.scope=paired", "pairs without a cost"),
        ("flow.identity_weight=1 flow.source_condition=true", "not supported with flow.source"),
        ("flow.source_noise=-1", "source_noise must be >= 0"),
        # combinations that would only fail later (mid-run, or after stage 1), refused up front
        ("data.resolution=20", r"multiple of 16 .*e\.g\. 16 or 32"),
        ("model.norm_num_groups=24", "multiples of model.norm_num_groups=24"),
        ("vae.own.block_out_channels=[16,32,60]", r"vae.own.norm_num_groups=8 .*\[60\]"),
        ("reflow.share=1", r"reflow.share must be in \[0, 1\)"),
        ("reflow.rounds=300", "more than the 200 reflow steps"),
        ("reflow.pairs=forward", "both, a2b, b2a"),
        ("adversarial.space=rgb", "latents, pixels, pixels-a, pixels-b"),
        ("adversarial.pixel_r1_gamma=-1", "adversarial.pixel_r1_gamma must be >= 0"),
        ("adversarial.pixel_highpass=-1", "adversarial.pixel_highpass must be >= 0"),
        ("adversarial.pixel_highpass=nan", "adversarial.pixel_highpass must be >= 0"),
        ("adversarial.pixel_highpass=2", "adversarial.space=latents has no discriminator on"),
        ("adversarial.trajectory_states=first", "uniform, last, ends"),
        ("adversarial.real_batch=0", "adversarial.real_batch must be positive"),
        ("adversarial.r1_every=0", "adversarial.r1_every must be positive"),
        ("vae.own.mixed_precision=fp16", "vae.own.mixed_precision.*auto, no, bf16"),
        ("guidance.a2b=-1", r"guidance.a2b must be in \[0, 10\]"),
        ("guidance.b2a=nan", r"guidance.b2a must be in \[0, 10\]"),
        ("guidance.at=1", r"guidance.at must be in \(0, 1\)"),
        ("guidance.at=0", r"guidance.at must be in \(0, 1\)"),
        ("guidance.b2a_until=0", r"guidance.b2a_until must be in \(0, 1\]"),
        ("vae.own.frequency_weight=-1", "vae.own.frequency_weight must be >= 0"),
        ("vae.own.frequency_weight=nan", "vae.own.frequency_weight must be >= 0"),
        ("guidance.a2b_until=1.5", r"guidance.a2b_until must be in \(0, 1\]"),
    ],
)
def test_invalid_values(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, override.split())  # a space separates two overrides


def test_folders_needs_root():
    with pytest.raises(ConfigError, match="data.root is required"):
        load_config(None, ["data.source=folders"])


def test_missing_file_and_bad_override(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["train.steps"])


def test_unknown_key_in_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  stepss: 3\n")
    with pytest.raises(ConfigError, match="train.stepss"):
        load_config(path)


def test_default_yaml_lists_every_key(repo):
    from omegaconf import OmegaConf

    from translate.config import Config

    def keys(node, prefix=""):
        out = set()
        for key, value in node.items():
            out.add(prefix + key)
            if isinstance(value, dict):
                out |= keys(value, f"{prefix}{key}.")
        return out

    schema = OmegaConf.to_container(OmegaConf.structured(Config))
    listed = OmegaConf.to_container(OmegaConf.load(repo / "configs" / "default.yaml"))
    assert keys(listed) == keys(schema)


def test_dataset_scope_needs_exact_ot():
    from translate.config import ConfigError

    assert load_config(None, ["flow.scope=dataset"]).flow.scope == "dataset"
    bridge = ["flow.scope=dataset", "flow.objective=sb-cfm", "flow.sigma=1.0"]
    assert load_config(None, [*bridge, "flow.sinkhorn_reg=0"]).flow.scope == "dataset"
    unbalanced = ["flow.scope=dataset", "flow.unbalanced_tau=0.95"]
    for refused in (["flow.scope=dataset", "flow.objective=i-cfm"], bridge, unbalanced):
        with pytest.raises(ConfigError, match="flow.scope=dataset needs the exact plan"):
            load_config(None, refused)
    with pytest.raises(ConfigError, match="relaxes an OT plan"):
        load_config(None, ["flow.objective=i-cfm", "flow.unbalanced_tau=0.95"])


def test_the_word_no_is_a_value_not_a_boolean(tmp_path):
    """YAML 1.1 reads no/off/yes/on as booleans; the documented ``mixed_precision=no`` must
    reach the config as the string 'no', from an override and from a file alike."""
    cfg = load_config(None, ["train.mixed_precision=no", "vae.own.mixed_precision=no"])
    assert cfg.train.mixed_precision == "no" and cfg.vae.own.mixed_precision == "no"
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  mixed_precision: no\nvae:\n  own:\n    mixed_precision: no\n")
    cfg = load_config(path)
    assert cfg.train.mixed_precision == "no" and cfg.vae.own.mixed_precision == "no"
    # boolean fields still take the YAML 1.1 words, and numbers without a dot are numbers
    cfg = load_config(None, ["data.flip=yes", "train.lr=5e-4", "vae.own.kl_weight=1e-6"])
    assert cfg.data.flip is True and cfg.train.lr == 5e-4 and cfg.vae.own.kl_weight == 1e-6
    assert load_config(None, ["data.flip=off"]).data.flip is False


def test_broken_yaml_is_one_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML") as err:
        load_config(path)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="model.attention=\\[false"):
        load_config(None, ["model.attention=[false"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train: {steps: 5}\ntrain: {batch_size: 6}\n", "line 2, column 1: key 'train' is"),
        ("train: &a [*a]\n", "aliases are not allowed"),
        ("- train\n", "must hold a mapping of sections"),
        ("false\n", "must hold a mapping of sections"),
        ('"train: {steps: 5}"\n', "it holds a str"),
    ],
)
def test_bad_config_files_are_one_line_errors(tmp_path, text, message):
    """Repeated keys no longer overwrite silently, aliases (unbounded expansion) are refused,
    and a file must hold a mapping."""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        load_config(path)
    assert "\n" not in str(err.value)


def test_config_file_encoding_and_dates(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes("data:\n  domain_a: M\xe4nner\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_config(path)
    path.write_text("\ufeffdata:\n  domain_a: Männer\ntrain:\n  output_dir: 2024-01-01\n", "utf-8")
    cfg = load_config(path, ["data.domain_b=2024-01-02"])
    assert (cfg.data.domain_a, cfg.train.output_dir) == ("Männer", "2024-01-01")
    assert cfg.data.domain_b == "2024-01-02"  # dates stay strings


@pytest.mark.parametrize(
    "item",
    ["train.output_dir=a\n  b: [", "tra\nin.steps=5", "train.steps", "=5", "train={a: 1, a: 2}"],
)
def test_bad_overrides_are_one_line_errors(item):
    with pytest.raises(ConfigError) as err:
        load_config(None, [item])
    assert "\n" not in str(err.value)


def test_odd_keys_are_config_errors():
    for item in ("model.block_out_channels[0]=32", "model.block_out_channels={}"):
        with pytest.raises(ConfigError, match="invalid config"):
            load_config(None, [item])


def test_unusable_config_path_is_a_config_error():
    with pytest.raises(ConfigError, match="config file"):
        load_config("x" * 5000 + ".yaml")  # longer than any file name may be


@pytest.mark.parametrize(
    "overrides, step",
    [
        ([], 600),  # the default: the field before its reflow round (the last quarter)
        (["guidance.a2b=1", "guidance.b2a=1"], 0),  # both weights 1: no guide is kept
        (["guidance.a2b=1"], 600),  # B -> A still guided
        (["guidance.a2b=1", "guidance.b2a=3"], 600),
        (["guidance.a2b=0"], 600),  # the guide alone is a valid (if odd) choice
        (["train.steps=6", "guidance.at=0.5"], 3),
        (["train.steps=1", "guidance.at=0.1"], 1),  # never step 0: there is no field yet
    ],
)
def test_the_guide_step_is_a_share_of_the_run(overrides, step):
    assert guide_step(load_config(None, overrides)) == step
