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


class RegistryError(GraftError):
    """The MLflow registry cannot be read or written, or holds a model this Graft cannot load."""


class PromotionConflict(GraftError):
    """The ``champion`` alias moved after evaluate compared the model with it: promoting the
    model now would replace a champion it was never compared with."""


class PipelineServerError(GraftError):
    """The KFP API server cannot be reached, refuses the credentials or rejects a request."""


class HoldoutReuseError(GraftError):
    """A model already scored on the sealed test split would be scored on it again."""


class PipelineStageError(GraftError):
    """A stage of a pipeline run on this machine failed; its log file holds the cause."""


class TrackingError(GraftError):
    """The MLflow tracking server cannot be reached or refuses a request."""


class ScoringRequestError(GraftError):
    """A request to the model server (``graft serve``) is not rows the served model takes."""


class RayJobError(GraftError):
    """A stage submitted as a Ray job failed, was stopped, timed out or cannot be reached.

    Carries the job's submission id, terminal status, Ray's message and the last lines of its
    log, so the KFP task that waited on it fails with the cause in its own log.
    """

    def __init__(
        self,
        message: str,
        *,
        submission_id: str = "",
        status: str = "",
        job_message: str = "",
        log_tail: str = "",
    ) -> None:
        super().__init__(message)
        self.submission_id = submission_id
        self.status = status
        self.job_message = job_message
        self.log_tail = log_tail
