"""The project's own exceptions.

Every error a user can cause by what they pass in (a bad file, an unknown name, a wrong option) is a
``MnistkitError``: the CLI prints its message as one line and exits non-zero, with no traceback.
"""


class MnistkitError(Exception):
    """Base class: a problem with the user's input or environment, with a message that says what to do."""

    exit_code = 2


class DataError(MnistkitError):
    """A dataset file is missing, unreadable, malformed or fails its checksum."""


class DownloadError(DataError):
    """A dataset could not be fetched from any mirror."""


class ConfigError(MnistkitError):
    """An invalid option or hyperparameter."""


class CheckpointError(MnistkitError):
    """A checkpoint or run folder is missing, tampered with, or does not match its model."""


class TrainingError(MnistkitError):
    """Training cannot go on (for example the loss became NaN)."""
