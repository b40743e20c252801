"""Writes that are complete or absent."""

import pytest

from translate import atomic


def test_a_failed_write_leaves_the_old_result_and_no_temporary(tmp_path):
    final = tmp_path / "result"
    with atomic.atomic_dir(final) as tmp:
        (tmp / "a.txt").write_text("first")
    with pytest.raises(RuntimeError), atomic.atomic_dir(final) as tmp:
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("killed mid-write")
    assert (final / "a.txt").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result"]
    with atomic.atomic_dir(final) as tmp:
        (tmp / "b.txt").write_text("second")
    assert sorted(p.name for p in final.iterdir()) == ["b.txt"]  # replaced whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result"]


def test_files_and_leftovers(tmp_path):
    target = tmp_path / "out.csv"
    with atomic.atomic_file(target, prefix=".tmp-x-") as tmp:
        assert tmp.name == ".tmp-x-out.csv"
        tmp.write_text("done")
    assert target.read_text() == "done"
    (tmp_path / ".tmp-left").mkdir()
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / ".old-gone").write_text("")
    (tmp_path / "sub" / ".tmp-x-kept.png").write_text("")
    atomic.clean_temporaries(tmp_path)  # this folder only
    assert not (tmp_path / ".tmp-left").exists() and (tmp_path / "sub" / ".old-gone").exists()
    atomic.clean_temporaries(tmp_path, (".tmp-x-",), recursive=True)
    assert not (tmp_path / "sub" / ".tmp-x-kept.png").exists()
    assert (tmp_path / "sub" / ".old-gone").exists() and target.is_file()
