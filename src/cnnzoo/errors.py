"""Errors a user can fix. The CLI prints them as one line and exits with code 2."""


class CnnzooError(Exception):
    """Base class of every error caused by bad input (names, options, files, configs)."""


class UnknownModelError(CnnzooError, KeyError):
    """A model name that is not in the registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class UnknownOptionError(CnnzooError, TypeError):
    """A keyword argument that a model (or config section) does not take."""


class DataError(CnnzooError):
    """A dataset that cannot be loaded as asked: a missing path, an unknown name, a bad image."""


class ConfigError(CnnzooError):
    """A configuration key that is unknown, mistyped, out of range or contradicts another."""
