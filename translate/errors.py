"""The one exception type users see: its message is a complete, one-line explanation."""


class TranslateError(Exception):
    """A user-facing error (bad config, data or checkpoint); printed without a traceback."""


class ConfigError(TranslateError):
    """An unknown config key, a wrong type or an invalid choice."""


def first_line(err: BaseException) -> str:
    """An exception's message cut to its first line, or its type's name when it has none."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
