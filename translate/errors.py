"""The one exception type users see: its message is a complete, one-line explanation."""


class TranslateError(Exception):
    """A user-facing error (bad config, data or checkpoint); printed without a traceback."""


class ConfigError(TranslateError):
    """An unknown config key, a wrong type or an invalid choice."""
