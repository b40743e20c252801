"""Writes that are complete or absent: a temporary name next to the target, then a rename.

A process killed mid-write leaves a temporary (``.tmp-*``), or an old copy set aside
(``.old-*``), which ``clean_temporaries`` removes on the next start; never a half-written file
or folder under its final name. Every module that writes a result a later run reads (data
builds, VAEs, latent caches, states, checkpoints, converted images, reports) writes it here.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TMP, OLD = ".tmp-", ".old-"


def temporary(final: Path, unique: bool = False, prefix: str = TMP) -> Path:
    """The temporary sibling of ``final``; ``unique`` adds the process id, for writers that
    may run at once (two processes building the same cache entry)."""
    final = Path(final)
    return final.with_name(f"{prefix}{final.name}" + (f"-{os.getpid()}" if unique else ""))


def replace(tmp: Path, final: Path) -> None:
    """Move a finished file or folder to its final name, replacing an older one.

    A file is replaced in one atomic rename. An older folder is first renamed aside
    (``.old-*``) and deleted after the new one is in place, so that a kill leaves one of the
    two whole under the final name.
    """
    tmp, final = Path(tmp), Path(final)
    if final.is_dir() and not final.is_symlink():
        old = final.with_name(f"{OLD}{final.name}-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def remove(path: Path) -> None:
    """Delete a file or a folder if it is there."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def atomic_dir(final: Path, unique: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it replaces ``final``, on an error it is
    removed (the error propagates)."""
    tmp = temporary(final, unique)
    remove(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        remove(tmp)
        raise
    replace(tmp, final)


@contextmanager
def atomic_file(final: Path, unique: bool = False, prefix: str = TMP) -> Iterator[Path]:
    """Yield a temporary file path; on success it replaces ``final``, on an error it is
    removed (the error propagates)."""
    tmp = temporary(final, unique, prefix)
    try:
        yield tmp
    except BaseException:
        remove(tmp)
        raise
    os.replace(tmp, final)


def clean_temporaries(folder: Path, prefixes: tuple[str, ...] = (TMP, OLD), recursive=False):
    """Remove the leftovers of interrupted writes directly in ``folder`` (or, ``recursive``,
    anywhere below it): entries whose names start with one of ``prefixes``."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    entries = folder.rglob("*") if recursive else folder.iterdir()
    for path in list(entries):
        if path.name.startswith(prefixes):
            remove(path)
