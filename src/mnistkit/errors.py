"""The project's own exceptions.

Every error a user can cause by what they pass in (a bad file, an unknown name, a wrong option) is a
``MnistkitError``: the CLI prints its message as one line and exits non-zero, with no traceback.
Messages speak in option names (``batch_size``), as the Python API takes them; an error lists the ones it
names in ``options`` so that the CLI can show them as its flags (``--batch-size``).
"""

from __future__ import annotations

import difflib
import signal
from collections.abc import Iterable
from typing import Any


class MnistkitError(Exception):
    """Base class: a problem with the user's input or environment, with a message that says what to do.
    ``options``: the option names the message mentions, the one at fault first."""

    exit_code = 2

    def __init__(self, message: str = "", *, options: tuple[str, ...] = ()):
        super().__init__(message)
        self.options = options


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


class WriteError(MnistkitError):
    """A file could not be written: a full disk, a folder that is not writable or no longer there."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """``" did you mean 'mlp'?"`` when ``name`` is a likely typo of one of ``choices``, else ``""``."""
    close = difflib.get_close_matches(str(name).lower(), list(choices), n=1, cutoff=0.6)
    return f" did you mean '{close[0]}'?" if close else ""


def short(value: Any) -> str:
    """A value as a message shows it: never longer than a few dozen characters, never more than one line."""
    if isinstance(value, dict):
        return f"an object of {len(value)} keys"
    if isinstance(value, list):
        return f"a list of {len(value)} items"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def unknown_choice(what: str, name: str, choices: Iterable[str]) -> str:
    """The one-line message for a name that is not one of ``choices``, with a suggestion for a likely typo."""
    choices = list(choices)
    return f"unknown {what} {short(name)};{did_you_mean(name, choices)} choose one of: {', '.join(choices)}"


def stopped_by(signum: int) -> str:
    """What a message calls a stop by ``signum``: "interrupted" for Ctrl-C, "terminated (SIGTERM)" for SIGTERM."""
    return "terminated (SIGTERM)" if signum == signal.SIGTERM else "interrupted"
