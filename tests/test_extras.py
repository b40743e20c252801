"""Optional dependencies: inference needs none of them, and a missing one is one clear line."""

import subprocess
import sys

import pytest

from translate import cli
from translate.errors import TranslateError, require

OPTIONAL = ("torchmetrics", "torch_fidelity", "sklearn", "matplotlib", "tensorboard")


def test_an_inference_import_loads_no_optional_package():
    code = (
        "import sys, translate, translate.convert, translate.serving; "
        f"print(sorted(m for m in {OPTIONAL!r} if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


def test_require_names_the_missing_package_and_its_extra():
    require(("json", "torch"), "anything", "eval")  # installed: nothing happens
    with pytest.raises(TranslateError) as err:
        require(("json", "surely_not_installed_xyz"), "translate-eval", "eval")
    assert str(err.value) == (
        "translate-eval needs surely_not_installed_xyz, which is not installed: "
        "pip install 'translate[eval]' (or -e '.[eval]' in a clone)"
    )


def test_eval_without_its_extra_is_one_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # what an install without the extra has
    assert cli.eval_main(["runs/none/checkpoint-final"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "error: translate-eval needs sklearn, which is not installed: "
        "pip install 'translate[eval]' (or -e '.[eval]' in a clone)"
    ]


def test_training_with_tensorboard_missing_says_how_to_go_on(monkeypatch, repo):
    from translate import train
    from translate.config import load_config

    monkeypatch.setitem(sys.modules, "tensorboard", None)
    cfg = load_config(repo / "configs" / "tiny.yaml", ["train.log_with=tensorboard"])
    with pytest.raises(TranslateError, match=r"train.log_with=none trains without logs.*\[train\]"):
        train.main(cfg)
