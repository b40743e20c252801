"""translate-folder on a corpus of good, bad and odd inputs."""

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from corpus import make_corpus
from helpers import tiny_translator, torchrun
from PIL import Image

from translate import convert as convert_module
from translate.cli import convert_main
from translate.convert import TMP_PREFIX


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_vae):
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint-final"
    tiny_translator(tiny_vae).save_pretrained(path)
    return path


@pytest.fixture
def corpus(tmp_path):
    good, bad = make_corpus(tmp_path / "in")
    return tmp_path / "in", good, bad


def _outputs(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "failures.csv"
    }


def _failures(root: Path) -> dict[str, str]:
    with (root / "failures.csv").open(encoding="utf-8") as f:
        return {Path(row["path"]).name: row["reason"] for row in csv.DictReader(f)}


def test_corpus_converts_good_and_reports_bad(checkpoint, corpus, tmp_path, capsys):
    src, good, bad = corpus
    out = tmp_path / "out"
    assert len(good) + len(bad) >= 20
    code = convert_main([str(checkpoint), str(src), str(out), "--steps", "2", "--batch-size", "4"])
    assert code == 1  # some inputs failed
    for rel, size in good.items():
        target = out / Path(rel)
        assert target.is_file(), rel
        with Image.open(target) as image:
            assert image.size == size, rel
    failures = _failures(out)
    assert set(failures) == {Path(rel).name for rel in bad}
    assert "decompression-bomb" in failures["bomb.png"]
    assert "not an image" in failures["empty.png"]
    captured = capsys.readouterr()
    assert f"converted {len(good)}, skipped 0 (already done), failed {len(bad)}" in captured.out
    assert "animated (3 frames)" in captured.err
    with Image.open(out / "rgba.png") as image:
        assert image.mode == "RGBA"  # alpha re-attached where the format allows
    assert not list(out.rglob(f"{TMP_PREFIX}*"))

    again = convert_main([str(checkpoint), str(src), str(out), "--steps", "2", "--batch-size", "4"])
    assert again == 1
    assert (
        f"converted 0, skipped {len(good)} (already done), failed {len(bad)}"
        in capsys.readouterr().out
    )


def test_model_size_and_format(checkpoint, corpus, tmp_path):
    src, _, _ = corpus
    out = tmp_path / "out"
    convert_main(
        [
            str(checkpoint),
            str(src / "wide.jpg"),
            str(out),
            "--size",
            "model",
            "--format",
            "webp",
            "--steps",
            "1",
        ]
    )
    with Image.open(out / "wide.webp") as image:
        assert image.size == (16, 16)


def test_kill_then_rerun_equals_an_uninterrupted_run(checkpoint, corpus, tmp_path, monkeypatch):
    src, _, _ = corpus
    args = ["--steps", "2", "--batch-size", "3"]
    assert convert_main([str(checkpoint), str(src), str(tmp_path / "whole"), *args]) == 1
    real_write = convert_module.write_image
    written = []

    def die_mid_write(image, alpha, target, quality):
        if len(written) == 5:  # leave a half-written temporary file, then die
            (target.parent / f"{TMP_PREFIX}{target.name}").write_bytes(b"partial")
            raise KeyboardInterrupt
        written.append(target)
        real_write(image, alpha, target, quality)

    monkeypatch.setattr(convert_module, "write_image", die_mid_write)
    assert convert_main([str(checkpoint), str(src), str(tmp_path / "resumed"), *args]) == 130
    monkeypatch.setattr(convert_module, "write_image", real_write)
    assert convert_main([str(checkpoint), str(src), str(tmp_path / "resumed"), *args]) == 1
    assert _outputs(tmp_path / "resumed") == _outputs(tmp_path / "whole")
    assert not list((tmp_path / "resumed").rglob(f"{TMP_PREFIX}*"))


def test_unreadable_file_is_reported(checkpoint, corpus, tmp_path, monkeypatch):
    src, _, _ = corpus
    real_open = Image.open

    def guarded(fp, *args, **kwargs):
        if str(fp).endswith("square.png"):
            raise PermissionError(13, "Permission denied")
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", guarded)
    convert_main([str(checkpoint), str(src), str(tmp_path / "out"), "--steps", "1"])
    assert _failures(tmp_path / "out")["square.png"] == "permission denied"


def test_deterministic_bytes(checkpoint, corpus, tmp_path):
    src, _, _ = corpus
    for name in ("a", "b"):
        convert_main([str(checkpoint), str(src / "nested"), str(tmp_path / name), "--steps", "2"])
    assert _outputs(tmp_path / "a") == _outputs(tmp_path / "b") != {}


def test_dry_run_writes_nothing(checkpoint, corpus, tmp_path, capsys):
    src, good, bad = corpus
    out = tmp_path / "out"
    assert convert_main([str(checkpoint), str(src), str(out), "--dry-run"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("convert\t") for line in lines) == len(good)
    # every input a real run would fail on is found by decoding it
    failing = {Path(line.split("\t")[1]).name for line in lines if line.startswith("fail\t")}
    assert failing == {Path(rel).name for rel in bad}
    assert (
        lines[-1]
        == f"dry run: {len(good) + len(bad)} image(s) found, {len(bad)} unreadable; nothing written"
    )
    assert not out.exists()


def test_usage_errors_exit_2(checkpoint, corpus, tmp_path, capsys):
    src, _, _ = corpus
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    cases = [
        ([str(tmp_path / "nope"), str(src), str(tmp_path / "o")], "checkpoint not found"),
        ([str(checkpoint), str(tmp_path / "missing"), str(tmp_path / "o")], "INPUT not found"),
        ([str(checkpoint), str(src), str(src / "out")], "inside INPUT"),
        ([str(checkpoint), str(src), str(blocker / "out")], "not writable"),
    ]
    for argv, message in cases:
        assert convert_main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.slow
def test_two_processes_split_the_work(checkpoint, corpus, tmp_path):
    src, good, bad = corpus
    args = [str(checkpoint), str(src), "--steps", "2", "--batch-size", "2"]
    assert convert_main([args[0], args[1], str(tmp_path / "single"), *args[2:]]) == 1
    result = torchrun(
        "-m", "translate", "folder", args[0], args[1], tmp_path / "double", *args[2:], cwd=tmp_path
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert f"converted {len(good)}, skipped 0 (already done), failed {len(bad)}" in result.stdout
    double, single = _outputs(tmp_path / "double"), _outputs(tmp_path / "single")
    assert sorted(double) == sorted(single)
    # the same images: each torchrun process computes with one thread, the single run with two,
    # and a CPU whose kernels reduce in another order per thread count rounds a pixel or two
    # differently (seen on an AVX2-only CPU: one pixel of one image, by one level)
    for name in single:
        one, two = (
            np.asarray(Image.open(io.BytesIO(files[name])).convert("RGBA"), np.int16)
            for files in (single, double)
        )
        diff = np.abs(one - two)
        assert one.shape == two.shape, name
        assert diff.max() <= 4 and diff.mean() < 0.05, (name, diff.max(), diff.mean())
    assert _failures(tmp_path / "double") == _failures(tmp_path / "single")


def test_inputs_that_would_share_an_output_name_each_get_their_own(checkpoint, tmp_path):
    src, out = tmp_path / "clash", tmp_path / "clash-out"
    src.mkdir()
    for name, colour in (("photo.jpg", (200, 30, 30)), ("photo.png", (30, 30, 200))):
        image = Image.new("RGB", (16, 16), colour)  # two colours: a flat image is refused
        image.paste((255, 255, 255), (0, 0, 8, 16))
        image.save(src / name)
    image.paste((30, 200, 30), (8, 0, 16, 16))
    image.save(src / "other.png")
    argv = [str(checkpoint), str(src), str(out), "--steps", "1", "--format", "png"]
    assert convert_main(argv) == 0
    assert sorted(_outputs(out)) == ["other.png", "photo.jpg.png", "photo.png.png"]
    first = _outputs(out)
    assert convert_main([*argv, "--overwrite"]) == 0
    assert _outputs(out) == first  # deterministic names and bytes


def test_a_full_disk_keeps_finished_outputs_and_every_reason(
    checkpoint, corpus, tmp_path, capsys, monkeypatch
):
    import errno

    src, good, bad = corpus
    out = tmp_path / "out"
    real_write = convert_module.write_image
    written = []

    def disk_fills(image, alpha, target, quality):
        if len(written) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(image, alpha, target, quality)
        written.append(target)

    def no_room(*args, **kwargs):  # the failure report cannot be written either
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(convert_module, "write_image", disk_fills)
    monkeypatch.setattr(convert_module.csv, "writer", no_room)
    code = convert_main([str(checkpoint), str(src), str(out), "--steps", "1"])
    captured = capsys.readouterr()
    assert code == 1
    failed = len(good) + len(bad) - 3
    assert (
        f"converted 3, skipped 0 (already done), failed {failed}; the disk is full" in captured.out
    )
    assert "could not write failures.csv" in captured.out and "reasons above" in captured.out
    reasons = [line for line in captured.err.splitlines() if line.startswith("failed: ")]
    assert len(reasons) == failed and sum("No space left" in r for r in reasons) == len(good) - 3
    assert not (out / "failures.csv").exists() and not list(out.rglob(f"{TMP_PREFIX}*"))
    for target in written:  # what was finished before the disk filled is whole
        assert convert_module.is_complete(target)


def test_failures_csv_only_when_something_failed(checkpoint, corpus, tmp_path):
    src, _, bad = corpus
    out = tmp_path / "out"
    assert convert_main([str(checkpoint), str(src), str(out), "--steps", "1"]) == 1
    assert (out / "failures.csv").is_file()
    for rel in bad:  # the user removes the bad inputs and reruns: the stale report goes
        (src / rel).unlink()
    assert convert_main([str(checkpoint), str(src), str(out), "--steps", "1"]) == 0
    assert not (out / "failures.csv").exists()


def test_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit):
        convert_main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    defaults = (
        "(default: the checkpoint's own for the direction, sample.<direction>_steps or "
        "sample.steps)",
        "(default: a2b)",
        "(default: the checkpoint's sample.method)",
    )
    for default in (*defaults, "(default: same)"):
        assert default in text


def test_linked_folders_convert_and_broken_links_flat_images_are_failures(
    checkpoint, tmp_path, capsys
):
    import numpy as np

    src, elsewhere = tmp_path / "in", tmp_path / "elsewhere"
    (src / "real").mkdir(parents=True)
    elsewhere.mkdir()
    noise = np.random.default_rng(0).integers(0, 255, (20, 20, 3), dtype=np.uint8)
    Image.fromarray(noise).save(src / "real" / "a.png")
    Image.fromarray(noise[::-1]).save(elsewhere / "b.png")
    Image.new("RGB", (20, 20), (255, 255, 255)).save(src / "flat.png")
    (src / "linked").symlink_to(elsewhere, target_is_directory=True)
    (src / "real" / "up").symlink_to(src, target_is_directory=True)  # a loop: visited once
    (src / "broken.png").symlink_to(tmp_path / "missing.png")
    out = tmp_path / "out"
    assert convert_main([str(checkpoint), str(src), str(out), "--dry-run"]) == 1
    dry = capsys.readouterr().out  # the dry run predicts the real run's failures
    assert f"fail\t{src / 'flat.png'}\tthe image is one flat colour" in dry
    assert convert_main([str(checkpoint), str(src), str(out), "--steps", "1"]) == 1
    assert "converted 2, skipped 0 (already done), failed 2" in capsys.readouterr().out
    assert (out / "real" / "a.png").is_file() and (out / "linked" / "b.png").is_file()
    failures = _failures(out)
    assert failures["broken.png"].startswith("file not found (a broken symbolic link")
    assert failures["flat.png"] == "the image is one flat colour: nothing to translate"


def test_a_non_finite_translation_is_a_failure_never_a_black_image(tiny_vae, tmp_path):
    import numpy as np
    import torch

    translator = tiny_translator(tiny_vae)
    with torch.no_grad():  # a diverged checkpoint: its weights hold NaN
        next(translator.unet.parameters()).fill_(float("nan"))
    translator.save_pretrained(tmp_path / "diverged")
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        noise = np.random.default_rng(i).integers(0, 255, (20, 20, 3), dtype=np.uint8)
        Image.fromarray(noise).save(src / f"{i}.png")
    out = tmp_path / "out"
    assert convert_main([str(tmp_path / "diverged"), str(src), str(out), "--steps", "1"]) == 1
    failures = _failures(out)
    assert set(failures) == {"0.png", "1.png", "2.png"}
    assert all("not finite" in reason for reason in failures.values())
    assert not list(out.rglob("*.png"))


def test_without_steps_the_checkpoint_default_is_used(tiny_vae, tmp_path):
    from helpers import draw_shape
    from numpy.random import default_rng

    translator = tiny_translator(tiny_vae)
    translator.info.config = {"sample": {"steps": 3}}
    checkpoint = tmp_path / "ckpt"
    translator.save_pretrained(checkpoint)
    src = tmp_path / "in"
    src.mkdir()
    draw_shape("A", 24, default_rng(0)).save(src / "a.png")
    runs = {"default": [], "3": ["--steps", "3"], "2": ["--steps", "2"]}
    for name, steps in runs.items():
        assert convert_main([str(checkpoint), str(src), str(tmp_path / name), *steps]) == 0
    outputs = {name: (tmp_path / name / "a.png").read_bytes() for name in runs}
    assert outputs["default"] == outputs["3"] != outputs["2"]


def test_without_a_method_the_checkpoint_solver_is_used(tiny_vae, tmp_path):
    from helpers import draw_shape
    from numpy.random import default_rng

    translator = tiny_translator(tiny_vae)
    translator.info.config = {"sample": {"steps": 2, "method": "midpoint"}}
    checkpoint = tmp_path / "ckpt"
    translator.save_pretrained(checkpoint)
    src = tmp_path / "in"
    src.mkdir()
    draw_shape("A", 24, default_rng(0)).save(src / "a.png")
    runs = {"default": [], "midpoint": ["--method", "midpoint"], "euler": ["--method", "euler"]}
    for name, method in runs.items():
        assert convert_main([str(checkpoint), str(src), str(tmp_path / name), *method]) == 0
    outputs = {name: (tmp_path / name / "a.png").read_bytes() for name in runs}
    assert outputs["default"] == outputs["midpoint"] != outputs["euler"]


def test_without_guidance_the_checkpoint_weight_is_used(tiny_vae, tmp_path):
    from helpers import draw_shape
    from numpy.random import default_rng

    checkpoint = tmp_path / "ckpt"
    tiny_translator(tiny_vae, guidance=2.0).save_pretrained(checkpoint)
    src = tmp_path / "in"
    src.mkdir()
    draw_shape("A", 24, default_rng(0)).save(src / "a.png")
    runs = {"default": [], "2": ["--guidance", "2"], "1": ["--guidance", "1"]}
    for name, guidance in runs.items():
        args = [str(checkpoint), str(src), str(tmp_path / name), "--steps", "2", *guidance]
        assert convert_main(args) == 0
    outputs = {name: (tmp_path / name / "a.png").read_bytes() for name in runs}
    assert outputs["default"] == outputs["2"] != outputs["1"]
    plain = tmp_path / "plain"
    tiny_translator(tiny_vae).save_pretrained(plain)
    args = [str(plain), str(src), str(tmp_path / "refused"), "--guidance", "2"]
    assert convert_main(args) == 2  # no guide to extrapolate from: a one-line error
