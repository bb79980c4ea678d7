"""Errors a user can act on. The CLI prints their message (no stack trace) and exits 2."""


class DiffCXRError(Exception):
    """Base of every error whose message is meant for the user."""


class ConfigError(DiffCXRError):
    """A profile, key or value is invalid; the message names the key and the reason."""


class StorageError(DiffCXRError):
    """A URI cannot be read or written; the message names the URI and the reason."""


class DataError(DiffCXRError):
    """A dataset or manifest is unusable as a whole (single bad rows are quarantined instead)."""


class TrackingError(DiffCXRError):
    """MLflow is unreachable or a registered model/alias does not exist."""
