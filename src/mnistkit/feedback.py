"""Corrections people give on the drawing page ("that was a 4"), kept in one SQLite file.

Each correction stores the 28×28 image the model saw, the original drawing as PNG (when there is one), the
true label, the model's answer and confidence, the model's SHA-256 and a UTC timestamp. The same drawing is
stored once: sending it again replaces its label (the latest correction wins). The file is in WAL mode, so
the server's worker threads write while ``mnistkit feedback`` and ``train --data`` read; every write is one
transaction, so a killed server loses no committed correction.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from . import fileio
from .errors import MnistkitError, short

T = TypeVar("T")

SCHEMA_VERSION = 1
FILE_NAME = "feedback.sqlite"
SQLITE_MAGIC = b"SQLite format 3\x00"
BUSY_TIMEOUT_MS = 5000  # how long a write waits for another writer before reporting the file as locked
MAX_DRAWING_BYTES = 2 * 1024 * 1024
# What new corrections may fill: some 100,000 of a few KiB each, as the page sends them. A flood through the API stops
# here, each refused in one line, rather than when the disk is full.
MAX_DATABASE_BYTES = 2**30
PAGE_PRAGMAS = ("page_size", "page_count", "freelist_count")  # pages in use, as deleting frees them


class FeedbackError(MnistkitError):
    """The corrections database cannot be opened, read or written."""


class FeedbackFull(FeedbackError):
    """No room for another correction: the file is at its ``max_bytes``, or the disk is full."""


def _error(path: Path, exc: sqlite3.Error) -> FeedbackError:
    """One line for an SQLite failure on ``path``, a FeedbackFull where there was no room to write."""
    full = getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL  # none on the module's own errors
    return (FeedbackFull if full else FeedbackError)(f"{path}: {_explain(exc)}")


def default_path() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("mnistkit", appauthor=False)) / FILE_NAME


def is_feedback_file(path: Path) -> bool:
    """True for an SQLite file (by its header, whatever the name). Only regular files are opened: a FIFO would
    block the read."""
    if not path.is_file():
        return False
    try:
        with open(path, "rb") as f:
            return f.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except OSError:
        return False


def _create_v1(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE corrections (
            id INTEGER PRIMARY KEY,
            created_utc TEXT NOT NULL,
            label INTEGER NOT NULL CHECK (label BETWEEN 0 AND 9),
            predicted INTEGER CHECK (predicted BETWEEN 0 AND 9),
            confidence REAL CHECK (confidence BETWEEN 0 AND 1),
            model_sha256 TEXT,
            pixels BLOB NOT NULL CHECK (length(pixels) = 784),
            drawing_png BLOB,
            drawing_sha256 TEXT NOT NULL UNIQUE
        )"""
    )
    db.execute("CREATE INDEX corrections_label ON corrections (label)")


# MIGRATIONS[v] brings a database at schema version v to v + 1; version 0 is a new, empty file.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_create_v1]


@functools.cache
def _schema(version: int) -> dict[str, list[str]]:
    """Each table of schema ``version`` with its columns, built by ``MIGRATIONS`` in memory: what a file at that
    version holds, derived from the migrations themselves so that the two cannot disagree."""
    db = sqlite3.connect(":memory:")
    try:
        for step in MIGRATIONS[:version]:
            step(db)
        return {name: _columns(db, name) for name in _tables(db)}
    finally:
        db.close()


def _tables(db: sqlite3.Connection) -> list[str]:
    """The file's tables and views, without SQLite's own (``sqlite_sequence``, ``sqlite_stat1``)."""
    rows = db.execute(
        "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
        "ORDER BY name"
    )
    return [row[0] for row in rows]


def _columns(db: sqlite3.Connection, table: str) -> list[str]:
    return [row[0] for row in db.execute("SELECT name FROM pragma_table_info(?)", (table,))]


def _names(names: list[str], most: int = 5) -> str:
    """``'a', 'b'`` on one line however odd the names, the first ``most`` of them and how many more."""
    shown = ", ".join(short(name) for name in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


@dataclass(frozen=True)
class Correction:
    id: int
    created_utc: str
    label: int
    predicted: int | None
    confidence: float | None
    model_sha256: str | None


SQLITE_INTEGERS = range(-(2**63), 2**63)  # what an SQLite INTEGER holds: no correction has an id outside


def _storable(ids: Iterable[int]) -> list[int]:
    """The distinct ``ids`` that may name a correction, sorted; others (``2**70``) match none, not an OverflowError."""
    return sorted({int(i) for i in ids if int(i) in SQLITE_INTEGERS})


MAX_IDLE_CONNECTIONS = 4  # kept open between transactions; more are closed as their transaction ends


class FeedbackStore:
    """One SQLite file of corrections. Safe to share between threads: each transaction borrows a connection of its
    own from a small pool. (Not one per thread: a server's worker threads come and go, and the connection of an
    ended thread would stay open, two file descriptors each, until the process ran out of them.)"""

    def __init__(self, path: str | Path, create: bool = True, max_bytes: int = MAX_DATABASE_BYTES):
        self.path = fileio.expanded(path)
        self.max_bytes = max_bytes  # what new corrections may fill; beyond it, add() refuses them
        if not create and not self.path.is_file():
            raise FeedbackError(f"{self.path}: no corrections database here; pass the file the server wrote")
        self._idle: list[sqlite3.Connection] = []  # open, in no transaction
        self._read_digest: str | None = None  # checksum() of what images() last read in full
        self._lock = threading.Lock()
        if create:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise FeedbackError(f"{self.path.parent}: cannot create the folder ({exc.strerror or exc})") from None
        # Recognised read-only before the first connection that may write (it switches the file to WAL): a file
        # that is not ours is left exactly as it is.
        version = self._inspect()
        if version == 0 and not create:  # an empty file: the server writes its tables as it starts
            raise FeedbackError(
                f"{self.path}: an empty file, no corrections database yet; pass the file the server wrote"
            )
        if version < SCHEMA_VERSION:
            self._run(self._migrate, write=True)
        else:
            self._run(lambda db: db.execute("SELECT count(*) FROM corrections").fetchone())  # damage fails here

    def _connect(self) -> sqlite3.Connection:
        # check_same_thread=False: a connection serves one transaction at a time, from whichever thread runs it.
        writable = _folder_writable(self.path)
        target = self.path if writable else self._read_only_uri()  # read-only: a write is refused as such
        db = sqlite3.connect(
            target, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False, uri=not writable
        )
        try:
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            # WAL lets readers (stats, training) work while the server writes. It is kept in the file, so a
            # read-only file that is already in WAL mode (or not yet) is left as it is.
            if writable and db.execute("PRAGMA journal_mode").fetchone()[0] != "wal" and os.access(self.path, os.W_OK):
                db.execute("PRAGMA journal_mode = WAL")
        except BaseException:
            db.close()
            raise
        return db

    def _borrow(self) -> sqlite3.Connection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self._connect()

    def _give_back(self, db: sqlite3.Connection) -> None:
        with self._lock:
            if len(self._idle) < MAX_IDLE_CONNECTIONS:
                self._idle.append(db)
                return
        db.close()

    def _run(self, work: Callable[[sqlite3.Connection], T], write: bool = False) -> T:
        """Run ``work`` in one transaction; any SQLite failure is one FeedbackError line."""
        try:
            db = self._borrow()
        except sqlite3.Error as exc:
            raise _error(self.path, exc) from None
        try:
            db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            result = work(db)
            db.execute("COMMIT")
        except BaseException as exc:
            # A failed transaction's connection is closed, not reused: closing rolls back whatever is left of the
            # transaction (SQLite may have rolled it back itself, for a full disk, or a COMMIT may have failed),
            # and no ROLLBACK that fails in turn hides the first error.
            db.close()
            if isinstance(exc, sqlite3.Error):
                raise _error(self.path, exc) from None
            raise
        self._give_back(db)
        return result

    def _inspect(self) -> int:
        """The file's schema version, read through a read-only connection; FeedbackError if it is not ours."""
        if not self.path.exists():
            return 0  # a new file
        if not self.path.is_file():
            raise FeedbackError(f"{self.path}: not a file; give the path of a corrections database file")
        try:
            db = sqlite3.connect(self._read_only_uri(), uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
            try:
                return self._recognise(db)
            finally:
                db.close()
        except sqlite3.Error as exc:
            raise _error(self.path, exc) from None

    def _read_only_uri(self) -> str:
        """The URI that opens the file read-only. SQLite reads a file in WAL mode through its -shm file, which it
        creates if missing; where the folder is read-only (a read-only mount, another user's folder) and there is
        none, the file is opened as immutable, which needs none. That reads it whole unless a -wal file holds
        corrections not yet copied into it (a killed writer's): those are only read with a -shm file."""
        uri = self.path.resolve().as_uri() + "?mode=ro"
        wal, shm = (Path(f"{self.path.resolve()}-{end}") for end in ("wal", "shm"))
        if _folder_writable(self.path) or shm.exists():
            return uri
        if wal.exists() and wal.stat().st_size > 0:
            raise FeedbackError(
                f"{self.path}: its last corrections wait in {short(wal.name)}, which is read only beside a -shm file "
                "or in a writable folder; open the file once where its folder is writable"
            )
        return uri + "&immutable=1"

    def _recognise(self, db: sqlite3.Connection) -> int:
        """The schema version of the file ``db`` reads, after checking that it holds what that version of mnistkit
        writes: a file with no tables is new (0); any other SQLite file is someone else's and is refused."""
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = _tables(db)
        if version == 0 and not tables:
            return 0
        # mnistkit writes no triggers: one would act on its writes unseen (a deletion that adds the row back).
        triggers = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' ORDER BY name")]
        if triggers:
            raise self._not_ours(f"it holds the trigger{'s' if len(triggers) > 1 else ''} {_names(triggers)}")
        expected = _schema(min(max(version, 1), SCHEMA_VERSION))
        # A table of ours with other columns tells most about whose file this is. (A newer mnistkit may have
        # changed the columns, but keeps the tables this one knows.)
        if version <= SCHEMA_VERSION:
            for name in sorted(expected.keys() & set(tables)):
                found = _columns(db, name)
                if found != expected[name]:
                    raise self._not_ours(f"its table {short(name)} has the columns {_names(found)}, not mnistkit's")
        if version <= 0 or not set(expected) <= set(tables):
            held = f"the table{'s' if len(tables) > 1 else ''} {_names(tables)}" if tables else "no tables"
            raise self._not_ours(f"it holds {held}")
        if version > SCHEMA_VERSION:
            raise FeedbackError(
                f"{self.path}: written by a newer mnistkit (schema {version}, this one knows "
                f"{SCHEMA_VERSION}); upgrade mnistkit or choose another file"
            )
        return version

    def _not_ours(self, why: str) -> FeedbackError:
        return FeedbackError(
            f"{self.path}: not an mnistkit corrections database ({why}); it was left as it is: choose another file"
        )

    def _migrate(self, db: sqlite3.Connection) -> None:
        version = self._recognise(db)  # again, in this transaction: another process may have changed the file
        for step in MIGRATIONS[version:]:
            step(db)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def add(
        self,
        pixels: np.ndarray,
        label: int,
        predicted: int | None = None,
        confidence: float | None = None,
        model_sha256: str | None = None,
        drawing_png: bytes | None = None,
    ) -> tuple[int, bool]:
        """Store a correction; returns (its id, whether it is new). ``pixels`` is the 28×28 uint8 the model saw."""
        image = np.asarray(pixels)
        if image.shape != (28, 28) or image.dtype != np.uint8:
            raise FeedbackError(
                f"a correction needs the 28×28 uint8 image the model saw, got {image.dtype} {image.shape}"
            )
        if not 0 <= int(label) <= 9:
            raise FeedbackError(f"label must be a digit 0-9, got {label}")
        if drawing_png is not None and len(drawing_png) > MAX_DRAWING_BYTES:
            raise FeedbackError(f"the drawing is {len(drawing_png):,} bytes; at most {MAX_DRAWING_BYTES:,} are kept")
        blob = image.tobytes()
        key = hashlib.sha256(drawing_png if drawing_png is not None else blob).hexdigest()
        row = (
            datetime.now(UTC).isoformat(timespec="milliseconds"),
            int(label),
            predicted,
            confidence,
            model_sha256,
            blob,
            drawing_png,
            key,
        )

        def insert(db: sqlite3.Connection) -> tuple[int, bool]:
            found = db.execute("SELECT id FROM corrections WHERE drawing_sha256 = ?", (key,)).fetchone()
            if found is not None:
                db.execute("UPDATE corrections SET label = ?, created_utc = ? WHERE id = ?", (row[1], row[0], found[0]))
                return found[0], False
            self._check_room(db, len(blob) + len(drawing_png or b""))
            cursor = db.execute(
                "INSERT INTO corrections (created_utc, label, predicted, confidence, model_sha256, pixels, "
                "drawing_png, drawing_sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            return int(cursor.lastrowid or 0), True  # always set after an INSERT

        self._read_digest = None
        return self._run(insert, write=True)

    def _check_room(self, db: sqlite3.Connection, adding: int) -> None:
        """FeedbackError unless ``adding`` more bytes keep the file's pages in use within ``max_bytes``."""
        page_size, pages, free = (db.execute(f"PRAGMA {name}").fetchone()[0] for name in PAGE_PRAGMAS)
        used = (pages - free) * page_size
        if used + adding > self.max_bytes:
            raise FeedbackFull(
                f"{self.path}: full, its corrections take {_size(used)} of the {_size(self.max_bytes)} it may hold; "
                "export them (mnistkit feedback export), then delete some, or choose another file"
            )

    def writable(self) -> bool:
        """Whether corrections can be added: the file and its folder (for SQLite's -wal and -shm files) writable."""
        return _folder_writable(self.path) and os.access(self.path, os.W_OK)

    def count(self) -> int:
        return self._run(lambda db: db.execute("SELECT count(*) FROM corrections").fetchone()[0])

    def stats(self) -> dict[str, object]:
        """Counts per true label, and how often the model's answer agreed with it."""

        def query(db: sqlite3.Connection) -> dict[str, object]:
            rows = db.execute(
                "SELECT label, count(*), sum(predicted = label), sum(predicted IS NOT NULL) FROM corrections "
                "GROUP BY label ORDER BY label"
            ).fetchall()
            per_label = {str(label): {"count": n, "model_agreed": agreed or 0} for label, n, agreed, _ in rows}
            total = sum(n for _, n, _, _ in rows)
            judged = sum(j or 0 for *_, j in rows)
            agreed = sum(a or 0 for _, _, a, _ in rows)
            return {
                "corrections": total,
                "per_label": per_label,
                "model_agreement": agreed / judged if judged else None,
            }

        return self._run(query)

    def latest(self, limit: int = 20) -> list[Correction]:
        """The ``limit`` newest corrections, newest first."""
        if limit < 0:  # SQLite reads a negative LIMIT as none at all: -1 would list everything
            raise FeedbackError(f"the number of corrections to list must be 0 or more, got {limit}")
        rows = self._run(
            lambda db: db.execute(
                "SELECT id, created_utc, label, predicted, confidence, model_sha256 FROM corrections "
                "ORDER BY id DESC LIMIT ?",
                (min(limit, SQLITE_INTEGERS.stop - 1),),
            ).fetchall()
        )
        # A confidence that is no number (stored past the table's checks) is shown as none, not a failed listing.
        return [
            Correction(i, created, label, predicted, _number_or_none(confidence), model)
            for i, created, label, predicted, confidence, model in rows
        ]

    def images(self, ids: Iterable[int] | None = None) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """(uint8 images N×28×28, uint8 labels N, ids) in id order: all corrections, or those in ``ids``. Read in
        one transaction straight into one array: 100,000 corrections take their 78 MB once, not again as rows."""
        wanted = None if ids is None else _storable(ids)
        images, labels, found, damaged = self._run(lambda db: _read_images(db, wanted))
        self._refuse_damaged(damaged)
        if wanted is None:
            self._read_digest = _digest(found, labels, images)
        return images, labels, found

    def _refuse_damaged(self, ids: list[int]) -> None:
        """One line naming the rows mnistkit cannot have written (another program's, or stored past the table's
        checks), and the command that deletes them; else nothing."""
        if not ids:
            return
        listed = " ".join(str(i) for i in ids[:MOST_IDS_NAMED])
        which = f" (the first {MOST_IDS_NAMED} of {len(ids)})" if len(ids) > MOST_IDS_NAMED else ""
        many = len(ids) > 1
        raise FeedbackError(
            f"{self.path}: {len(ids)} damaged correction{'s' * many} (pixels that are not 784 bytes, or a label that "
            f"is no digit 0-9); delete {'them' if many else 'it'} with: mnistkit feedback delete {listed}{which}"
        )

    def delete(self, ids: Iterable[int]) -> int:
        """Delete corrections by id; returns how many existed."""
        wanted = _storable(ids)
        if not wanted:
            return 0
        self._read_digest = None

        def remove(db: sqlite3.Connection) -> int:
            deleted = 0
            for chunk in _chunks(wanted):
                deleted += db.execute(f"DELETE FROM corrections WHERE id IN ({_marks(chunk)})", chunk).rowcount
            return deleted

        return self._run(remove, write=True)  # all or none

    def checksum(self) -> str:
        """SHA-256 over the corrections (ids, labels, images) as ``images()`` last read them all: what a training run
        records as the data it trained on, though the server may have added more since. Read afresh when
        ``images()`` has not read them all, or this store has changed them since."""
        digest = self._read_digest
        if digest is None:
            images, labels, ids = self.images()
            digest = _digest(ids, labels, images)
        return digest

    def close(self) -> None:
        """Close the idle connections, from any thread (a transaction in progress keeps its own until it ends); the
        store opens new ones if it is used again."""
        with self._lock:
            idle, self._idle = self._idle, []
        for db in idle:
            db.close()


MOST_IDS_NAMED = 10  # of the damaged rows a message names
PIXELS = 28 * 28


def _read_images(
    db: sqlite3.Connection, wanted: list[int] | None
) -> tuple[np.ndarray, np.ndarray, list[int], list[int]]:
    """(images, labels, ids, ids of damaged rows) of all corrections or the ``wanted`` ones, row by row into arrays
    sized by a count in the same transaction (so the same snapshot of the file)."""
    stored = db.execute("SELECT count(*) FROM corrections").fetchone()[0]
    most = stored if wanted is None else min(stored, len(wanted))
    pixels, labels = bytearray(most * PIXELS), bytearray(most)
    found: list[int] = []
    damaged: list[int] = []
    for row_id, image, label in _rows(db, wanted):
        if not _whole(image, label):
            damaged.append(row_id)
            continue
        n = len(found)
        pixels[n * PIXELS : (n + 1) * PIXELS] = image
        labels[n] = label
        found.append(row_id)
    n = len(found)
    images = np.frombuffer(pixels, np.uint8)[: n * PIXELS].reshape(n, 28, 28)
    return images, np.frombuffer(labels, np.uint8)[:n], found, damaged


def _rows(db: sqlite3.Connection, wanted: list[int] | None) -> Iterator[tuple[int, Any, Any]]:
    """(id, pixels, label) of each correction, or each ``wanted`` one, in id order; fetched as iterated."""
    if wanted is None:
        yield from db.execute("SELECT id, pixels, label FROM corrections ORDER BY id")
        return
    for chunk in _chunks(wanted):  # sorted, so the chunks' rows follow in id order
        yield from db.execute(
            f"SELECT id, pixels, label FROM corrections WHERE id IN ({_marks(chunk)}) ORDER BY id", chunk
        )


IDS_PER_STATEMENT = 500  # SQLite refuses more than 32,766 values in a statement (999 before 3.32)


def _chunks(ids: list[int]) -> Iterator[list[int]]:
    for start in range(0, len(ids), IDS_PER_STATEMENT):
        yield ids[start : start + IDS_PER_STATEMENT]


def _marks(values: list[int]) -> str:
    return ",".join("?" * len(values))


def _digest(ids: list[int], labels: np.ndarray, images: np.ndarray) -> str:
    digest = hashlib.sha256(np.asarray(ids, dtype=np.int64).tobytes())
    digest.update(labels.data)  # as buffers: no copy of the images
    digest.update(np.ascontiguousarray(images).data)
    return digest.hexdigest()


def _whole(pixels: object, label: object) -> bool:
    """Whether a row's image and label are as ``add`` stores them. The table's checks keep other values out, but
    not from a table written by hand, or by SQLite with its checks turned off; and length() counts a text's
    characters, not its bytes."""
    return isinstance(pixels, bytes) and len(pixels) == PIXELS and type(label) is int and 0 <= label <= 9


def _number_or_none(value: object) -> float | None:
    return value if isinstance(value, (int, float)) else None


def _size(n: float) -> str:
    """``n`` bytes as a message shows them: 1.0 GiB, 195 KiB, 12 bytes."""
    unit = "bytes"
    for larger in ("KiB", "MiB", "GiB"):
        if n < 1024:
            break
        n, unit = n / 1024, larger
    return f"{n:.1f} {unit}" if unit != "bytes" and n < 10 else f"{n:,.0f} {unit}"


def _folder_writable(path: Path) -> bool:
    """Whether SQLite may create the -wal and -shm files beside ``path`` (False on a read-only mount, even for root)."""
    return os.access(path.resolve().parent, os.W_OK)


def _explain(exc: sqlite3.Error) -> str:
    text = str(exc)
    if "locked" in text or "busy" in text:
        return f"the database is locked by another program ({text}); close it or try again"
    if "disk is full" in text:
        return f"the disk is full ({text}); free some space on it, then try again"
    if "readonly" in text or "read-only" in text:
        return "the database is read-only; make the file and its folder writable, or choose another file"
    if "not a database" in text or "malformed" in text or "file is encrypted" in text:
        return f"not a valid corrections database ({text}); move it aside to start a new one"
    if "unable to open" in text:
        return "cannot open the database file; check the folder exists and is writable"
    return f"database error ({text})"
