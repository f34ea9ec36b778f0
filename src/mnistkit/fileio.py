"""Files on disk: atomic writes of files and folders (a reader, or a crash, never sees a half-written one) and
bounded reads (a file from elsewhere is read only if it is a regular file of a size we expect)."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import stat
import tempfile
import threading
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, BinaryIO

from .errors import FULL_DISK, FULL_DISK_ADVICE, ConfigError, WriteError

try:
    import fcntl
except ImportError:  # Windows: temporary files are neither locked nor removed (see remove_stale_temporaries)
    fcntl = None  # type: ignore[assignment]


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    The temporary file is fsynced before the rename, so after a crash ``path`` holds either the old
    or the new content, never a mix; the folder is fsynced after it, so that after a power loss the rename
    itself is not lost. On any error the temporary file is removed and ``path`` is untouched. One that a killed
    process left is removed by the next write of ``path`` (``remove_stale_temporaries``).
    """
    path = Path(path)
    with _new_temporary(path) as tmp:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the permissions open() would
        try:
            yield tmp
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
            sync_folder(path.parent)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise _cannot_write(path, exc) from exc
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


@contextmanager
def _new_temporary(path: Path, folder: bool = False, replaces: Collection[str] = ()) -> Iterator[Path]:
    """A new temporary file (or folder) beside ``path``, locked until the block ends, made once those that killed
    writes of ``path`` left are removed. The lock is the kernel's (flock), so it ends with the process, even killed:
    while the process lives, no other write's ``remove_stale_temporaries`` removes its file."""
    remove_stale_temporaries(path, replaces)
    try:
        tmp, fd = _locked_temporary(path, folder)
    except OSError as exc:
        raise _cannot_write_in(path, exc) from exc
    try:
        yield tmp
    finally:
        if fd is not None:
            os.close(fd)  # after the rename or removal: releases the lock
        _listing.own_change(path.parent)


def _locked_temporary(path: Path, folder: bool) -> tuple[Path, int | None]:
    """A new temporary file (or folder) beside ``path`` and the fd that holds its lock (None without flock).

    It can only be locked once made, and in between another write's ``remove_stale_temporaries`` may find it unlocked
    and remove it. So once locked, the name is checked to still be the locked file, and if not a new one is made:
    no temporary file is removed while its write lives, without the age threshold that a clock set back defeats."""
    prefix, suffix = f".{path.name}.", ".tmp"  # the names _TEMPORARY_NAME matches
    while True:
        if folder:
            tmp = Path(tempfile.mkdtemp(suffix, prefix, path.parent))
        else:
            fd, name = tempfile.mkstemp(suffix, prefix, path.parent)
            os.close(fd)
            tmp = Path(name)
        if fcntl is None:
            return tmp, None
        held = _lock(tmp)
        if held is not None:
            return tmp, held


def _lock(tmp: Path) -> int | None:
    """An fd that holds the lock on ``tmp``; None if ``tmp`` was removed before it was locked."""
    try:
        fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # waits while another write's cleaning holds it
    except OSError:
        return fd  # a file system without flock: no cleaning can lock the file either, so none removes it
    try:
        if os.path.samestat(os.fstat(fd), os.lstat(tmp)):
            return fd
    except FileNotFoundError:
        pass
    os.close(fd)
    return None


def remove_stale_temporaries(path: str | os.PathLike, replaces: Collection[str] = ()) -> None:
    """Remove the temporary files (and folders) that writes of ``path`` killed before their rename (SIGKILL, a power
    cut) left beside it, each as large as what it wrote: those of ``path``'s name alone, and of those only the ones
    no live write holds the lock on. A temporary folder goes only if it holds nothing but files named in
    ``replaces`` (what its writer writes) and their temporary files: anything else in it was put there by someone.
    Links are not followed, and what cannot be removed (another user's) is left. Where there is no flock (Windows)
    a live write's file cannot be told from a dead one's, so nothing is removed."""
    if fcntl is None:
        return
    path = Path(path)
    with _listing.lock:
        names = _listing.temporaries(path.parent).get(path.name, [])
        for name in list(names):
            with suppress(OSError):  # gone meanwhile, a link, not ours to remove: left as it is
                _remove_if_stale(path.parent / name, replaces)
            if not os.path.lexists(path.parent / name):
                names.remove(name)


class _Listing:
    """The temporary files' names in each folder written in, by the name they are of, listed once and again only
    when the folder has changed since (its mtime) other than by this process's own writes: listing the folder at
    every write would make N writes into one folder cost N² (``predict --show-input`` of 100,000 images)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._folders: dict[str, tuple[int, dict[str, list[str]]]] = {}

    def temporaries(self, folder: Path) -> dict[str, list[str]]:
        key = os.path.abspath(folder)
        try:
            mtime = os.stat(key).st_mtime_ns
            listed = self._folders.get(key)
            if listed is None or listed[0] != mtime:
                listed = self._folders[key] = (mtime, _temporaries_by_name(os.listdir(key)))
        except OSError:
            return {}  # the write itself says why it cannot write there
        return listed[1]

    def own_change(self, folder: Path) -> None:
        """A write in ``folder`` is done: what it changed there needs no new listing."""
        key = os.path.abspath(folder)
        with self.lock, suppress(OSError):
            if key in self._folders:
                self._folders[key] = (os.stat(key).st_mtime_ns, self._folders[key][1])


_listing = _Listing()


def _temporaries_by_name(names: Iterable[str]) -> dict[str, list[str]]:
    by_name: dict[str, list[str]] = {}
    for name in names:
        match = _TEMPORARY_NAME.fullmatch(name)
        if match:
            by_name.setdefault(match[1], []).append(name)
    return by_name


# The names of the temporary files of writes of a name, that name grouped: mkstemp and mkdtemp put 8 characters of
# [a-z0-9_] between the prefix and the suffix that ``_locked_temporary`` gives them.
_TEMPORARY_NAME = re.compile(r"\.(.+)\.[a-z0-9_]{8}\.tmp")


def _remove_if_stale(tmp: Path, replaces: Collection[str]) -> None:
    if os.path.lexists(_old_twin(tmp)):
        return  # a whole new folder that a crash kept from its place, the old one set aside beside it (atomic_folder)
    # O_NOFOLLOW: a link is refused, not followed; O_NONBLOCK: a FIFO of such a name does not wait for a writer.
    fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # a live write's
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            _remove_temporary_folder(tmp, replaces)
        elif stat.S_ISREG(mode):
            tmp.unlink()
    finally:
        os.close(fd)


def _remove_temporary_folder(folder: Path, replaces: Collection[str]) -> None:
    """``folder`` with its files, if they are all files named in ``replaces`` or their temporary files."""
    entries = list(folder.iterdir())
    if all(_is_written(entry, replaces) for entry in entries):
        for entry in entries:
            entry.unlink()
        folder.rmdir()


def _is_written(entry: Path, replaces: Collection[str]) -> bool:
    """Whether ``entry`` is a file named in ``replaces``, or the temporary file of one."""
    if entry.is_dir():
        return False
    temporary = _TEMPORARY_NAME.fullmatch(entry.name)
    return entry.name in replaces or (temporary is not None and temporary[1] in replaces)


def check_folder_exists(path: str | os.PathLike) -> Path:
    """``path``, if the folder it is to be written in exists; else WriteError, as the write itself would fail.
    For a check before the work whose result is written: a missing folder is not made, nor found only at the end."""
    path = Path(path)
    try:
        is_folder = stat.S_ISDIR(os.stat(path.parent).st_mode)
    except OSError as exc:
        raise _cannot_write_in(path, exc) from None
    if not is_folder:
        raise _cannot_write_in(path, NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR)))
    return path


READ_ONLY_MOUNT = "a read-only file system"


def why_unwritable(folder: Path) -> str | None:
    """Why this process may not create files in the existing ``folder`` (``READ_ONLY_MOUNT`` or "permission
    denied"), or None where it may: found before work whose result would then be lost."""
    if os.access(folder, os.W_OK | os.X_OK):
        return None
    try:
        read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # no statvfs (Windows): permissions are the likelier cause
        read_only = False
    return READ_ONLY_MOUNT if read_only else "permission denied"


def expanded(path: str | os.PathLike[str]) -> Path:
    """``path`` with a leading ``~`` or ``~user`` expanded as a shell does it: the ``~name`` of a user this machine
    does not know stays as written (``Path.expanduser`` raises there), so that what fails is the file, in one line."""
    return Path(os.path.expanduser(path))


def given_path(value: object, what: str) -> Path:
    """``value`` as a Path, for an argument named ``what``; ConfigError for anything that is not a non-empty str or
    path (None, bytes, a number), which ``Path()`` would refuse with a bare TypeError or read as "."."""
    if not isinstance(value, (str, os.PathLike)):
        raise ConfigError(f"{what} must be a path (a str or Path), got {type(value).__name__}")
    if not os.fspath(value):
        raise ConfigError(f"{what} is empty: give a path")
    return expanded(value)


# The PNG text (its "Software" key) that marks a figure mnistkit wrote: drawing it again replaces it unasked.
FIGURE_SOFTWARE = "mnistkit"


def check_replaceable(path: str | os.PathLike, overwrite: bool) -> Path:
    """``path``, where a figure may be written: nothing is there, a figure mnistkit wrote is, or ``overwrite``
    says to replace what is. Anything else (a file of the user's under a figure's name) is a ConfigError."""
    path = Path(path)
    if overwrite or not os.path.lexists(path) or _is_our_figure(path):
        return path
    raise ConfigError(
        f"{path}: exists and is not a figure that mnistkit wrote; pass overwrite to replace it, or choose another name",
        options=("overwrite",),
    )


def _is_our_figure(path: Path) -> bool:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.format == "PNG" and image.info.get("Software") == FIGURE_SOFTWARE
    except (OSError, UnidentifiedImageError, ValueError):  # a folder, unreadable, not an image
        return False


@contextmanager
def folder_to_fill(folder: str | os.PathLike) -> Iterator[list[Path]]:
    """Make ``folder`` if it is missing (not the folders above it) and yield a list, to which the block adds each
    file it writes there. If the block fails (a full disk), a folder made here is taken back with those files, so
    that no empty or half-filled folder is left; a folder that was there is kept as it is."""
    folder = Path(folder)
    made = not folder.exists()
    try:
        folder.mkdir(exist_ok=True)
    except OSError as exc:
        raise _cannot_write_in(folder, exc) from None
    written: list[Path] = []
    try:
        yield written
    except BaseException:
        if made:
            for path in written:
                path.unlink(missing_ok=True)
            with suppress(OSError):  # what someone else put there meanwhile is theirs: the folder stays
                folder.rmdir()
        raise


def _cannot_write(path: Path, exc: OSError) -> WriteError:
    """A write of ``path`` that failed; with what to do for a full disk, which the system's words do not say."""
    advice = f"; {FULL_DISK_ADVICE}" if exc.errno in FULL_DISK else ""
    return WriteError(f"cannot write {path}: {exc.strerror or exc}{advice}")


def _cannot_write_in(path: Path, exc: OSError) -> WriteError:
    if exc.errno in FULL_DISK:
        return _cannot_write(path, exc)
    return WriteError(f"cannot write {path}: {exc.strerror or exc}; check the folder exists and is writable")


def sync_folder(folder: Path) -> None:
    """Flush ``folder``'s entries (a rename into it) to disk. Some filesystems cannot sync a folder, and Windows
    cannot open one: there the rename is as durable as they make it."""
    directory = getattr(os, "O_DIRECTORY", None)
    if directory is None:
        return
    try:
        fd = os.open(folder, os.O_RDONLY | directory)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF, errno.EACCES):
            raise
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """``obj`` as JSON, its strings made ``valid_unicode``: what other programs (and mnistkit's schema) can read."""
    write_text(path, json.dumps(valid_unicode(obj), indent=2, sort_keys=False) + "\n")


@contextmanager
def atomic_folder(path: str | os.PathLike, replaces: Collection[str] = ()) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it takes ``path``'s place.

    An existing ``path`` is replaced only if it is an empty folder or holds nothing but files named in ``replaces``
    (an earlier version of what is written): anything else there is someone's data, which replacing the folder
    would delete, so it raises WriteError and is left as it was. Callers check that first, in their own words; the
    check here, just before the swap, covers what changed while the new folder was written. The old folder is
    renamed aside and emptied of those files only once the new one is in place, so a crash leaves the old or the
    new folder complete (under its own or a hidden name), never a mix of the two. A temporary folder that a killed
    process left is removed by the next write of ``path``, if it holds only files named in ``replaces``
    (``remove_stale_temporaries``).
    """
    path = Path(path)
    with _new_temporary(path, folder=True, replaces=replaces) as tmp:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp creates 0700; give the folder the permissions mkdir would
        try:
            yield tmp
            blocker = in_the_way(path, replaces)
            if blocker is not None:
                raise WriteError(f"{path}: {blocker}, which replacing it would delete; nothing was written")
            if path.exists() or path.is_symlink():
                old = _old_twin(tmp)
                os.replace(path, old)
                os.replace(tmp, path)
                _remove_replaced(old, replaces, path)
            else:
                os.replace(tmp, path)
            sync_folder(path.parent)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise _cannot_write(path, exc) from exc
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _old_twin(tmp: Path) -> Path:
    """Where ``atomic_folder`` sets aside the folder that its temporary folder ``tmp`` replaces."""
    return tmp.with_name(tmp.name.removesuffix(".tmp") + ".old")


def in_the_way(path: str | os.PathLike, replaces: Collection[str] = ()) -> str | None:
    """What keeps a new folder from replacing ``path``, in words that follow its name (``"holds notes.txt, sub/"``,
    ``"is a file"``), or None where nothing would be lost: nothing there, an empty folder, one holding only files
    named in ``replaces``.
    A symlink is judged by what it points to: replacing it keeps the target, but the user meant the target."""
    path = Path(path)
    if not path.exists():
        return None  # nothing there, or a dangling link: only the link itself is replaced
    if not path.is_dir():
        return "is a file, not a folder"
    try:
        entries = sorted(path.iterdir())
    except OSError as exc:
        return f"cannot be listed ({exc.strerror or exc})"
    others = [
        entry.name + ("/" if entry.is_dir() else "")
        for entry in entries
        if not (entry.name in replaces and (entry.is_symlink() or not entry.is_dir()))
    ]
    if not others:
        return None
    shown = ", ".join(others[:3])
    return f"holds {shown}" if len(others) <= 3 else f"holds {shown} and {len(others) - 3} more"


def _remove_replaced(old: Path, replaces: Collection[str], path: Path) -> None:
    """Remove the folder a new one replaced: its files named in ``replaces``, then the folder itself, which must
    then be empty. Never a whole tree: what appeared in it meanwhile is kept, and said where."""
    if old.is_symlink():
        old.unlink()  # the link alone: what it pointed to stays
        return
    for name in replaces:
        (old / name).unlink(missing_ok=True)
    try:
        old.rmdir()
    except OSError:
        raise WriteError(f"wrote {path}; what was added to the folder it replaced meanwhile is kept in {old}") from None


def read_regular(path: str | os.PathLike, limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes; anything else raises OSError before it is read.

    A symlink is followed and the file it ends at is what is checked: a FIFO or a device (``/dev/zero``) is
    refused without blocking or reading, and so is a file larger than ``limit`` (or one growing past it
    while read). The OSError's ``strerror`` says which, for a one-line message.
    """
    # O_NONBLOCK: opening a FIFO must not wait for a writer; it changes nothing for regular files.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with open(fd, "rb") as f:
        info = os.fstat(fd)  # the opened file itself: no gap between checking a path and reading it
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(errno.EISDIR, "is a folder, expected a file")
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, f"not a regular file but {file_kind(info.st_mode)}")
        if info.st_size > limit:
            raise OSError(errno.EFBIG, f"file of {info.st_size:,} bytes, more than the {limit:,} allowed")
        # As much as the file holds, and a byte to tell it grew: read(limit + 1) would ask for a buffer of the
        # whole limit at once (a GiB for a data file), which a process under a memory limit cannot have.
        data = f.read(info.st_size + 1)
        if len(data) > info.st_size:
            data += _read_at_most(f, limit + 1 - len(data))
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"file grew past the {limit:,} bytes allowed while it was read")
    return data


def _read_at_most(f: BinaryIO, size: int, chunk: int = 1 << 20) -> bytes:
    """Up to ``size`` more bytes of ``f``, a chunk at a time: never a buffer of ``size`` at once."""
    chunks = []
    while size > 0 and (data := f.read(min(chunk, size))):
        chunks.append(data)
        size -= len(data)
    return b"".join(chunks)


def read_pipe(path: str | os.PathLike, limit: int) -> bytes:
    """What a FIFO (``/dev/stdin`` fed by a pipe, ``<(command)``) gives until its writer closes it, at most ``limit``
    bytes; more raises OSError. Opening does not wait for a writer: a FIFO without one reads as empty."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    os.set_blocking(fd, True)  # opened: now wait for the data of the writer there is
    with open(fd, "rb") as f:
        data = _read_at_most(f, limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"more than the {limit:,} bytes allowed")
    return data


def file_kind(mode: int) -> str:
    """What a file that is not a regular file is, in words: "a FIFO", "a character device"."""
    kinds = [(stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO")]
    return next((name for test, name in kinds if test(mode)), "a socket or other special file")


def valid_utf8(text: str) -> str:
    """``text`` as valid Unicode: a file name's bytes that are not UTF-8, which Python keeps as lone surrogates (and
    which JSON parsers, pydantic and matplotlib refuse), written as ``\\xe9``; the rest is as it was."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that no byte became (JSON's "\\ud800"): as JSON would escape it
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


def one_line(text: str) -> str:
    """``text`` with each control character written as ``\\x0a``, as ``valid_utf8`` writes a byte that is not UTF-8:
    a line that names a file stays one line, whatever the name holds (a newline, an escape sequence)."""
    return CONTROL_CHARACTERS.sub(lambda match: f"\\x{ord(match[0]):02x}", text)


def recorded_path(recorded: str | Path) -> Path:
    """The path that a name recorded by ``valid_utf8`` stands for: as written where that exists, else with each
    ``\\xNN`` turned back into the byte it was (a run trained on a file not named in UTF-8 finds it again)."""
    path = expanded(recorded)
    if path.exists() or "\\x" not in str(recorded):
        return path
    raw = re.sub(rb"\\x([0-9a-f]{2})", lambda m: bytes([int(m[1], 16)]), os.fsencode(str(path)))
    restored = Path(os.fsdecode(raw))
    return restored if restored.exists() else path


def valid_unicode(value: Any) -> Any:
    """``value``, a JSON document (dicts, lists, strings, numbers), with ``valid_utf8`` applied to every string in
    it, keys included."""
    if isinstance(value, str):
        return valid_utf8(value)
    if isinstance(value, dict):
        return {valid_unicode(key): valid_unicode(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [valid_unicode(item) for item in value]
    return value
