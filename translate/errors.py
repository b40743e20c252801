"""The one exception type users see: its message is a complete, one-line explanation."""

import errno
import importlib.util

# how writers that drop the errno say it: torch.save, safetensors (Rust io::ErrorKind)
_DISK_FULL = ("No space left on device", "StorageFull", "file write failed")


class TranslateError(Exception):
    """A user-facing error (bad config, data or checkpoint); printed without a traceback."""


class ConfigError(TranslateError):
    """An unknown config key, a wrong type or an invalid choice."""


def first_line(err: BaseException) -> str:
    """An exception's message cut to its first line, or its type's name when it has none."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def is_disk_full(err: BaseException | None) -> bool:
    """Whether an error, or one it was raised from, says that the disk is full (ENOSPC)."""
    while err is not None:
        if getattr(err, "errno", None) == errno.ENOSPC or any(m in str(err) for m in _DISK_FULL):
            return True
        err = err.__cause__ or err.__context__
    return False


def require(modules: tuple[str, ...], what: str, extra: str) -> None:
    """Raise TranslateError (one line) when any of ``modules`` is not installed.

    ``what`` names the feature that needs them and ``extra`` the install extra that brings
    them, e.g. ``require(("sklearn",), "translate-eval", "eval")``.
    """
    missing = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    if missing:
        raise TranslateError(
            f"{what} needs {', '.join(missing)}, which is not installed: "
            f"pip install 'translate[{extra}]' (or -e '.[{extra}]' in a clone)"
        )
