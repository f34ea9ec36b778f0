"""The project's own exceptions.

Every error a user can cause by what they pass in (a bad file, an unknown name, a wrong option) is a
``MnistkitError``: the CLI prints its message as one line and exits non-zero, with no traceback.
Messages speak in option names (``batch_size``), as the Python API takes them; an error lists the ones it
names in ``options`` so that the CLI can show them as its flags (``--batch-size``).
"""

from __future__ import annotations

import difflib
import errno
import os
import re
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


# Terminal escape sequences (colours, hyperlinks) that converters and libraries put in their messages.
ANSI_ESCAPE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])?")


def first_line(exc: BaseException) -> str:
    """A library's exception as part of a one-line error: its message's first line, without a terminal's colours,
    or the exception's type where it says nothing."""
    text = ANSI_ESCAPE.sub("", str(exc)).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def unknown_choice(what: str, name: str, choices: Iterable[str]) -> str:
    """The one-line message for a name that is not one of ``choices``, with a suggestion for a likely typo."""
    choices = list(choices)
    return f"unknown {what} {short(name)};{did_you_mean(name, choices)} choose one of: {', '.join(choices)}"


def stopped_by(signum: int) -> str:
    """What a message calls a stop by ``signum``: "interrupted" for Ctrl-C, "terminated (SIGTERM)" for SIGTERM."""
    return "terminated (SIGTERM)" if signum == signal.SIGTERM else "interrupted"


# What to do about an OSError, by its errno. One that reaches the CLI is the environment's fault (a path, its
# permissions, the disk), not the user's input as such nor a bug: its own words say what, these what to do.
OS_ERROR_ADVICE: dict[int | None, str] = {
    errno.ENAMETOOLONG: "shorten the name",
    errno.EACCES: "check the permissions of this path and of the folders above it",
    errno.EPERM: "check the permissions of this path and of the folders above it",
    errno.EROFS: "choose a path on a writable file system",
    errno.ELOOP: "a symbolic link in the path leads back to itself: fix or remove it",
    errno.ENOTDIR: "a file stands where the path needs a folder: check the path",
    errno.EISDIR: "a folder stands where the path needs a file: check the path",
    errno.ENOENT: "check the path",
}
FULL_DISK = (errno.ENOSPC, errno.EDQUOT)
FULL_DISK_ADVICE = "free some space and run again"  # what the user can do is the same for every path


def os_error(exc: OSError, output: str = "") -> str:
    """The one-line message for an OSError: the path, the system's words, and what to do.
    ``output``: what an error without a path was writing to (" to standard output"), if known."""
    name = shown_path(exc.filename, exc.errno)
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno in FULL_DISK:
        where = f" ({name})" if name else output
        return f"cannot write{where}: {reason}; {FULL_DISK_ADVICE}"
    advice = OS_ERROR_ADVICE.get(exc.errno, "check it, then run again")
    return f"{name}: {reason}; {advice}" if name else f"{reason}; {advice}"


def shown_path(filename: Any, code: int | None) -> str:
    """A path as a message shows it; one too long for the system shown by its ends, so that the line stays short."""
    if filename is None or isinstance(filename, int):  # none, or a file descriptor: no name to show
        return ""
    name = os.fsdecode(filename)
    if code == errno.ENAMETOOLONG and len(name) > 80:
        return f"{name[:40]}...{name[-30:]} ({len(name)} characters)"
    return name
