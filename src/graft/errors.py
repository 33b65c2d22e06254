"""One exception type per failure class; each message names the cause and the fix."""


class GraftError(Exception):
    """Base of every user-facing Graft error: the CLI prints its message on one line."""


class ConfigError(GraftError):
    """The configuration is invalid or contradictory."""


class DatasetError(GraftError):
    """The input data is missing, unreadable or fails validation."""


class StorageError(GraftError):
    """A local path or s3:// URI cannot be read or written."""


class TrainingError(GraftError):
    """Training cannot proceed (e.g. the overfit-one-batch preflight failed)."""


class ExportError(GraftError):
    """An exported model does not match the PyTorch model it came from."""


class PipelineServerError(GraftError):
    """The KFP API server cannot be reached, refuses the credentials or rejects a request."""
