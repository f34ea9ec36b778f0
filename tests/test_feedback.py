"""The corrections database: SQLite in WAL mode, one transaction per write, safe across threads and kills."""

import functools
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import threading
import tracemalloc

import numpy as np
import pytest

from mnistkit import data, feedback
from mnistkit.cli import main
from mnistkit.errors import DataError
from mnistkit.feedback import SCHEMA_VERSION, FeedbackError, FeedbackFull, FeedbackStore, is_feedback_file


def drawing(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (28, 28), dtype=np.uint8)


def filled(path, n: int = 12) -> FeedbackStore:
    store = FeedbackStore(path)
    for i in range(n):
        store.add(drawing(i), label=i % 10, predicted=(i + 1) % 10 if i % 3 else i % 10, confidence=0.5)
    return store


def test_a_new_file_has_the_schema_wal_mode_and_a_label_index(tmp_path):
    store = FeedbackStore(tmp_path / "sub" / "fb.sqlite")
    db = sqlite3.connect(store.path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    indexes = [row[1] for row in db.execute("PRAGMA index_list(corrections)")]
    assert "corrections_label" in indexes
    assert is_feedback_file(store.path)


def test_corrections_round_trip_and_the_same_drawing_is_stored_once(tmp_path):
    store = FeedbackStore(tmp_path / "fb.sqlite")
    image = drawing(1)
    first, new = store.add(image, label=4, predicted=9, confidence=0.8, model_sha256="ab" * 32, drawing_png=b"png")
    again, new_again = store.add(image, label=7, predicted=9, confidence=0.8, drawing_png=b"png")
    assert (new, new_again, again) == (True, False, first)
    images, labels, ids = store.images()
    assert ids == [first] and labels.tolist() == [7]  # the latest correction of a drawing wins
    assert np.array_equal(images[0], image)
    latest = store.latest(5)
    assert [(c.label, c.predicted, c.model_sha256) for c in latest] == [(7, 9, "ab" * 32)]
    assert latest[0].created_utc.endswith("+00:00")


def test_stats_count_per_label_and_agreement(tmp_path):
    stats = filled(tmp_path / "fb.sqlite").stats()
    assert stats["corrections"] == 12
    assert stats["per_label"]["0"] == {"count": 2, "model_agreed": 1}  # drawings 0 and 10: only 0 agreed
    assert stats["model_agreement"] == pytest.approx(4 / 12)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"label": 10}, "label must be a digit"),
        ({"label": -1}, "label must be a digit"),
        ({"pixels": np.zeros((28, 27), np.uint8)}, "28×28 uint8"),
        ({"pixels": np.zeros((28, 28), np.float32)}, "28×28 uint8"),
        ({"drawing_png": b"x" * (3 * 1024 * 1024)}, "at most"),
    ],
)
def test_bad_corrections_are_refused_and_nothing_is_stored(tmp_path, kwargs, message):
    store = FeedbackStore(tmp_path / "fb.sqlite")
    with pytest.raises(FeedbackError, match=message):
        store.add(**{"pixels": drawing(0), "label": 3, **kwargs})
    assert store.count() == 0


def test_concurrent_writers_from_threads_lose_nothing(tmp_path):
    store = FeedbackStore(tmp_path / "fb.sqlite")

    def write(offset: int) -> None:
        for i in range(25):
            store.add(drawing(offset * 100 + i), label=i % 10)

    threads = [threading.Thread(target=write, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.count() == 100
    assert store.delete([1, 2, 99999]) == 2 and store.count() == 98


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts open file descriptors in /proc")
def test_threads_that_come_and_go_leave_no_connection_open(tmp_path):
    # A server's worker threads end after a while idle and new ones take their place: a connection per thread,
    # kept until the store closed, ran the process out of file descriptors.
    store = FeedbackStore(tmp_path / "fb.sqlite")
    store.add(drawing(0), label=0)
    before = len(os.listdir("/proc/self/fd"))
    for i in range(1, 101):
        thread = threading.Thread(target=store.add, args=(drawing(i), i % 10))
        thread.start()
        thread.join()
    assert store.count() == 101
    assert len(os.listdir("/proc/self/fd")) <= before + 2 * feedback.MAX_IDLE_CONNECTIONS
    store.close()


def test_a_database_from_a_newer_mnistkit_is_one_clear_line(tmp_path):
    path = tmp_path / "fb.sqlite"
    FeedbackStore(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(FeedbackError, match="newer mnistkit"):
        FeedbackStore(path)


def sqlite_file(path, sql: str, user_version: int = 0):
    """An SQLite file that some other program wrote: its tables made by ``sql``, in SQLite's default journal mode."""
    db = sqlite3.connect(path)
    db.executescript(sql)
    db.execute(f"PRAGMA user_version = {user_version}")
    db.commit()
    db.close()
    return path


SOMEONE_ELSES = {
    "other tables": (
        "CREATE TABLE accounts (id INTEGER PRIMARY KEY, name TEXT); CREATE TABLE orders (id INTEGER, total REAL);",
        0,
        "it holds the tables 'accounts', 'orders'",
    ),
    "its own corrections table": (
        "CREATE TABLE corrections (id INTEGER PRIMARY KEY, who TEXT, fixed TEXT);",
        0,
        "its table 'corrections' has the columns 'id', 'who', 'fixed', not mnistkit's",
    ),
    "its own corrections table at our version": (
        "CREATE TABLE corrections (id INTEGER PRIMARY KEY, who TEXT);",
        SCHEMA_VERSION,
        "its table 'corrections' has the columns 'id', 'who', not mnistkit's",
    ),
    "user_version 7 and no corrections table": ("CREATE TABLE things (a);", 7, "it holds the table 'things'"),
    "our version and no tables": ("", SCHEMA_VERSION, "it holds no tables"),
    "many tables": (
        "".join(f"CREATE TABLE t{i} (a);" for i in range(8)),
        0,
        "it holds the tables 't0', 't1', 't2', 't3', 't4' and 3 more",
    ),
}


@pytest.mark.parametrize("case", list(SOMEONE_ELSES))
def test_someone_elses_sqlite_file_is_refused_and_left_as_it_is(tmp_path, case):
    sql, user_version, why = SOMEONE_ELSES[case]
    path = sqlite_file(tmp_path / "other.sqlite", sql, user_version)
    before = path.read_bytes()
    for create in (True, False):  # as serve opens it, and as `feedback` and `train --data` do
        with pytest.raises(FeedbackError) as error:
            FeedbackStore(path, create=create)
        assert str(error.value) == (
            f"{path}: not an mnistkit corrections database ({why}); it was left as it is: choose another file"
        )
    assert path.read_bytes() == before  # no table, no index, no user_version, no switch to WAL
    assert os.listdir(tmp_path) == ["other.sqlite"]


def test_someone_elses_file_stops_the_commands_that_read_corrections(tmp_path, capsys):
    path = sqlite_file(tmp_path / "other.sqlite", "CREATE TABLE accounts (id INTEGER PRIMARY KEY);")
    before = path.read_bytes()
    for argv in (["stats"], ["list"], ["export", "-o", str(tmp_path / "out")], ["delete", "1"]):
        assert run_cli("feedback", *argv, "--db", str(path)) == 2
        err = capsys.readouterr().err
        assert "not an mnistkit corrections database" in err and err.count("\n") == 1 and "Traceback" not in err
    with pytest.raises(DataError, match="not an mnistkit corrections database"):
        data.load_path(path)  # what `train --data` reads
    assert path.read_bytes() == before


def test_our_file_at_every_version_opens_and_upgrades(tmp_path, monkeypatch):
    # A later mnistkit adds a column: a file this one wrote is recognised as ours (at its older version) and migrated.
    def add_note(db: sqlite3.Connection) -> None:
        db.execute("ALTER TABLE corrections ADD COLUMN note TEXT")

    path = tmp_path / "fb.sqlite"
    filled(path, n=3).close()
    monkeypatch.setattr(feedback, "MIGRATIONS", [*feedback.MIGRATIONS, add_note])
    monkeypatch.setattr(feedback, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    monkeypatch.setattr(feedback, "_schema", functools.cache(feedback._schema.__wrapped__))  # not the cached one
    store = FeedbackStore(path)
    assert store.count() == 3
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    assert "note" in [row[1] for row in db.execute("PRAGMA table_info(corrections)")]
    db.close()
    store.close()
    assert FeedbackStore(path).count() == 3


def test_a_table_someone_added_to_our_file_does_not_make_it_foreign(tmp_path):
    path = tmp_path / "fb.sqlite"
    filled(path, n=3).close()
    sqlite_file(path, "CREATE TABLE my_notes (id INTEGER, note TEXT);", SCHEMA_VERSION)
    assert FeedbackStore(path, create=False).count() == 3


def test_our_file_with_a_trigger_someone_added_is_refused(tmp_path):
    # A trigger acts on mnistkit's writes unseen: this one put back each correction deleted, and `feedback delete`
    # reported it gone.
    path = tmp_path / "fb.sqlite"
    filled(path, n=3).close()
    sqlite_file(
        path,
        "CREATE TRIGGER keep AFTER DELETE ON corrections BEGIN "
        "INSERT INTO corrections SELECT * FROM corrections WHERE 0; END;",
        SCHEMA_VERSION,
    )
    before = path.read_bytes()
    with pytest.raises(FeedbackError, match=r"not an mnistkit corrections database \(it holds the trigger 'keep'\)"):
        FeedbackStore(path)
    assert path.read_bytes() == before


def with_a_row(path, **values) -> int:
    """Our file of 12 corrections, its table rebuilt without its checks (as a copy written by hand may be), and a row
    of ``values`` added; returns the row's id."""
    filled(path).close()
    db = sqlite3.connect(path)
    others = ", ".join(feedback._schema(SCHEMA_VERSION)["corrections"][1:])
    db.executescript(
        f"ALTER TABLE corrections RENAME TO checked; CREATE TABLE corrections (id INTEGER PRIMARY KEY, {others}); "
        "INSERT INTO corrections SELECT * FROM checked; DROP TABLE checked;"
    )
    row = {"created_utc": "2024", "label": 3, "pixels": bytes(784), "drawing_sha256": "x", **values}
    marks = ", ".join("?" * len(row))
    added = db.execute(f"INSERT INTO corrections ({', '.join(row)}) VALUES ({marks})", list(row.values())).lastrowid
    db.commit()
    db.close()
    return added


DAMAGED_ROWS = {
    "pixels of 100 bytes": {"pixels": bytes(100)},
    "text pixels of 784 characters": {"pixels": "é" * 784},  # length() counts characters: the check let it in
    "NULL pixels": {"pixels": None},
    "label 12": {"label": 12},
    "label 3.5": {"label": 3.5},
    "NULL label": {"label": None},
}


@pytest.mark.parametrize("values", DAMAGED_ROWS.values(), ids=list(DAMAGED_ROWS))
def test_a_row_mnistkit_did_not_write_is_named_with_how_to_delete_it(tmp_path, capsys, values):
    # Read as they were, such rows failed in NumPy with a traceback (or were exported with their label 12).
    path = tmp_path / "fb.sqlite"
    damaged = with_a_row(path, **values)
    line = (
        f"{path}: 1 damaged correction (pixels that are not 784 bytes, or a label that is no digit 0-9); "
        f"delete it with: mnistkit feedback delete {damaged}"
    )
    assert run_cli("feedback", "export", "--db", str(path), "-o", str(tmp_path / "out")) == 2
    assert capsys.readouterr().err == f"mnistkit: error: {line}\n"
    with pytest.raises(DataError) as error:
        data.load_path(path)  # what `train --data` reads
    assert str(error.value) == line
    assert run_cli("feedback", "list", "--db", str(path)) == 0  # where to find it
    assert f"{damaged:>6}" in capsys.readouterr().out
    assert run_cli("feedback", "delete", "--db", str(path), str(damaged)) == 0
    assert len(data.load_path(path).train) == 12 and not (tmp_path / "out").exists()


def test_many_damaged_rows_name_the_first_ten(tmp_path):
    path = tmp_path / "fb.sqlite"
    filled(path).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA ignore_check_constraints = ON")  # SQLite's own way past the table's checks
    db.executemany(
        "INSERT INTO corrections (created_utc, label, pixels, drawing_sha256) VALUES ('2024', 15, ?, ?)",
        [(bytes(784), str(i)) for i in range(25)],
    )
    db.commit()
    db.close()
    with pytest.raises(FeedbackError) as error:
        FeedbackStore(path).images()
    assert str(error.value).endswith(
        "25 damaged corrections (pixels that are not 784 bytes, or a label that is no digit 0-9); delete them with: "
        "mnistkit feedback delete 13 14 15 16 17 18 19 20 21 22 (the first 10 of 25)"
    )


def test_a_confidence_that_is_no_number_is_listed_as_none(tmp_path, capsys):
    path = tmp_path / "fb.sqlite"
    odd = with_a_row(path, predicted=4, confidence="lots")
    assert FeedbackStore(path).latest(1)[0].confidence is None
    assert run_cli("feedback", "list", "--db", str(path), "-n", "1") == 0
    assert capsys.readouterr().out.startswith(f"{odd:>6}  2024  label 3  model said 4\n")


def test_a_listed_correction_is_one_line_whatever_its_text_holds(tmp_path, capsys):
    path = tmp_path / "fb.sqlite"
    forged = with_a_row(path, created_utc="2024\n     1  2024  label 7  model said 7 (100%)", predicted=4)
    assert run_cli("feedback", "list", "--db", str(path), "-n", "1") == 0
    assert (
        capsys.readouterr().out
        == f"{forged:>6}  2024\\x0a     1  2024  label 7  model said 7 (100%)  label 3  model said 4\n"
    )
    db = sqlite3.connect(path)
    db.execute("UPDATE corrections SET label = ? WHERE id = ?", ("3\n  7:     9   the model agreed 9", forged))
    db.commit()
    db.close()
    assert run_cli("feedback", "stats", "--db", str(path)) == 0
    assert not any(line.startswith("  7:     9") for line in capsys.readouterr().out.splitlines())


def test_a_corrupt_file_is_one_clear_line(tmp_path):
    path = tmp_path / "fb.sqlite"
    path.write_bytes(b"SQLite format 3\x00" + b"\xff" * 5000)
    with pytest.raises(FeedbackError, match="not a valid corrections database"):
        FeedbackStore(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes read-only files anyway")
def test_a_read_only_file_reads_but_refuses_writes(tmp_path):
    path = tmp_path / "fb.sqlite"
    filled(path).close()
    path.chmod(0o444)
    store = FeedbackStore(path)
    assert store.count() == 12
    with pytest.raises(FeedbackError, match="read-only"):
        store.add(drawing(99), label=1)


@pytest.fixture
def read_only():
    """``read_only(folder)``: a command prefix under which ``folder`` is read-only, as a read-only mount is. For root,
    whom permissions do not stop, a read-only bind mount in a mount namespace of its own (skipped where unshare
    cannot make one); for others, the folder's permissions, restored after the test."""
    made: list = []

    def make(folder) -> list[str]:
        if os.geteuid() != 0:
            folder.chmod(0o555)
            made.append(folder)
            return []
        script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
        prefix = ["unshare", "--mount", "sh", "-c", script, str(folder)]
        if shutil.which("unshare") is None or subprocess.run([*prefix, "true"], capture_output=True).returncode:
            pytest.skip("a read-only mount needs unshare --mount and mount, as root")
        return prefix

    yield make
    for folder in made:
        folder.chmod(0o755)


# Runs the feedback commands in a read-only folder: each one's exit status and error output, and what training reads.
FEEDBACK_COMMANDS = """
import contextlib, io, json, sys
from mnistkit import data
from mnistkit.cli import main
db, out = sys.argv[1:]
results = {}
for argv in (["stats"], ["list"], ["export", "-o", out], ["delete", "1"]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            main(["feedback", *argv, "--db", db])
        except SystemExit as exc:
            results[argv[0]] = [exc.code, err.getvalue()]
try:
    results["train"] = len(data.load_path(db).train)
except Exception as exc:
    results["train"] = str(exc)
print(json.dumps(results))
"""


def feedback_commands(prefix: list[str], db, out) -> dict:
    done = subprocess.run([*prefix, sys.executable, "-c", FEEDBACK_COMMANDS, str(db), str(out)], capture_output=True)
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout)


def test_a_database_on_a_read_only_mount_reads_and_writes_say_why(tmp_path, read_only):
    # SQLite reads a WAL-mode file through a -shm file beside it, which it cannot create in a read-only folder:
    # every command, reading ones too, failed with "cannot open the database file".
    folder = tmp_path / "ro"
    filled(folder / "fb.sqlite").close()
    before = sorted(os.listdir(folder))
    results = feedback_commands(read_only(folder), folder / "fb.sqlite", tmp_path / "exported")
    read_only_line = (
        f"mnistkit: error: {folder / 'fb.sqlite'}: the database is read-only; make the file and its folder writable, "
        "or choose another file\n"
    )
    assert results == {
        "stats": [0, ""],
        "list": [0, ""],
        "export": [0, ""],
        "delete": [2, read_only_line],
        "train": 12,
    }
    assert data.load_path(tmp_path / "exported").train.labels.tolist() == [i % 10 for i in range(12)]
    assert sorted(os.listdir(folder)) == before == ["fb.sqlite"]
    assert FeedbackStore(folder / "fb.sqlite").count() == 12


def test_a_killed_writers_wal_on_a_read_only_mount_is_read_or_named(tmp_path, read_only):
    # A copy of the files a killed server left: its last corrections are in the -wal file, not yet in the database.
    live = FeedbackStore(tmp_path / "fb.sqlite")  # its open connections keep the -wal file as it is
    for i in range(12):
        live.add(drawing(i), label=i % 10)
    with_shm, without_shm = tmp_path / "with", tmp_path / "without"
    for folder, ends in ((with_shm, ("", "-wal", "-shm")), (without_shm, ("", "-wal"))):
        folder.mkdir()
        for end in ends:
            shutil.copy(f"{live.path}{end}", folder)
    live.close()
    results = feedback_commands(read_only(with_shm), with_shm / "fb.sqlite", tmp_path / "out.npz")
    assert results["train"] == 12 and results["stats"] == [0, ""]
    results = feedback_commands(read_only(without_shm), without_shm / "fb.sqlite", tmp_path / "out.npz")
    line = (
        f"{without_shm / 'fb.sqlite'}: its last corrections wait in 'fb.sqlite-wal', which is read only beside a -shm "
        "file or in a writable folder; open the file once where its folder is writable"
    )
    assert results["stats"] == [2, f"mnistkit: error: {line}\n"]
    assert results["train"] == line
    assert FeedbackStore(without_shm / "fb.sqlite").count() == 12  # writable again: SQLite applies its -wal file


def test_a_locked_database_is_reported_not_waited_on_forever(tmp_path, monkeypatch):
    monkeypatch.setattr("mnistkit.feedback.BUSY_TIMEOUT_MS", 100)
    path = tmp_path / "fb.sqlite"
    store = FeedbackStore(path)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(FeedbackError, match="locked") as error:
            store.add(drawing(1), label=1)
        assert not isinstance(error.value, FeedbackFull)  # a passing outage, not a lack of room
    finally:
        blocker.execute("ROLLBACK")
    assert store.add(drawing(1), label=1)[1]


def test_a_full_disk_is_named_and_writes_work_again_once_there_is_space(tmp_path, monkeypatch):
    # SQLite's page limit fails a write as a full disk does (SQLITE_FULL), and rolls the transaction back itself:
    # a ROLLBACK after it failed in turn and hid the reason ("cannot rollback - no transaction is active").
    store = FeedbackStore(tmp_path / "fb.sqlite")
    store.close()
    connect = FeedbackStore._connect

    def small_disk(self: FeedbackStore) -> sqlite3.Connection:
        db = connect(self)
        db.execute("PRAGMA max_page_count = 40")
        return db

    monkeypatch.setattr(FeedbackStore, "_connect", small_disk)
    errors = set()
    for i in range(60):
        try:
            store.add(drawing(i), label=i % 10, drawing_png=bytes([i]) * 3000)
        except FeedbackFull as exc:  # no room: the server answers 507, not 503
            errors.add(str(exc))
    assert errors == {
        f"{store.path}: the disk is full (database or disk is full); free some space on it, then try again"
    }
    stored = store.count()
    monkeypatch.undo()  # space again
    store.close()
    assert store.add(drawing(99), label=9)[1] and store.count() == stored + 1


@pytest.mark.parametrize(
    "n, shown", [(12, "12 bytes"), (200_000, "195 KiB"), (5 * 2**20 + 2**19, "5.5 MiB"), (2**30, "1.0 GiB")]
)
def test_sizes_in_messages(n, shown):
    assert feedback._size(n) == shown


def test_a_full_database_refuses_new_corrections_until_some_are_deleted(tmp_path):
    # Nothing bounded the file: a client sending corrections in a loop filled the disk.
    store = FeedbackStore(tmp_path / "fb.sqlite", max_bytes=200_000)
    refused = []
    for i in range(100):
        try:
            store.add(drawing(i), label=i % 10, drawing_png=bytes([i]) * 4000)
        except FeedbackFull as exc:  # no room: the server answers 507, not 503
            refused.append(str(exc))
    stored = store.count()
    assert 30 < stored < 50 and len(refused) == 100 - stored
    assert len(set(refused)) == 1 and re.fullmatch(
        f"{re.escape(str(store.path))}: full, its corrections take 1[89][0-9] KiB of the 195 KiB it may hold; "
        r"export them \(mnistkit feedback export\), then delete some, or choose another file",
        refused[0],
    )
    assert store.add(drawing(0), label=7, drawing_png=bytes([0]) * 4000) == (1, False)  # a label changed: no room
    assert store.delete(range(1, 11)) == 10
    assert store.add(drawing(200), label=2, drawing_png=bytes([200]) * 4000)[1]


def test_a_writer_killed_mid_stream_loses_no_committed_correction(tmp_path):
    path = tmp_path / "fb.sqlite"
    script = textwrap.dedent(
        f"""
        import numpy as np
        from mnistkit.feedback import FeedbackStore
        store = FeedbackStore({str(path)!r})
        for i in range(100000):
            image = np.full((28, 28), i % 256, np.uint8); image[0, :4] = np.frombuffer(i.to_bytes(4, "big"), np.uint8)
            cid, _ = store.add(image, label=i % 10, drawing_png=i.to_bytes(8, "big") * 100)
            print(cid, flush=True)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    committed = [int(proc.stdout.readline()) for _ in range(200)]
    proc.kill()
    proc.wait()
    committed += [int(line) for line in proc.stdout.read().split()]
    store = FeedbackStore(path)
    _, _, ids = store.images()
    assert set(committed) <= set(ids)
    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_training_reads_the_database_and_refuses_a_tiny_one(tmp_path):
    filled(tmp_path / "fb.sqlite").close()
    ds = data.load_path(tmp_path / "fb.sqlite")
    assert len(ds.train) == 12 and ds.test is None
    assert ds.checksums["fb.sqlite"] == FeedbackStore(tmp_path / "fb.sqlite").checksum()
    filled(tmp_path / "small.db", n=3).close()
    with pytest.raises(DataError, match="holds 3 corrections; training needs at least 10"):
        data.load_path(tmp_path / "small.db")


def test_training_records_the_checksum_of_what_it_read_while_the_server_writes(tmp_path, monkeypatch):
    # Training read the images, then read them all again for their checksum: twice the time, and a correction
    # stored in between went into the recorded checksum but not into the training set.
    path = tmp_path / "fb.sqlite"
    filled(path).close()
    server = FeedbackStore(path)
    read, seen = feedback._read_images, []

    def read_then_the_server_writes(db, wanted):
        found = read(db, wanted)
        seen.append(found)
        server.add(drawing(100 + len(seen)), label=5)
        return found

    monkeypatch.setattr(feedback, "_read_images", read_then_the_server_writes)
    ds = data.load_path(path)
    assert len(seen) == 1 and len(ds.train) == 12
    images, labels, ids, _ = seen[0]
    assert ds.checksums["fb.sqlite"] == feedback._digest(ids, labels, images)
    monkeypatch.undo()
    assert FeedbackStore(path).count() == 13
    assert FeedbackStore(path).checksum() != ds.checksums["fb.sqlite"]  # a new store reads what is stored now


def test_own_writes_make_the_checksum_read_afresh(tmp_path):
    store = filled(tmp_path / "fb.sqlite")
    store.images()
    for change in (lambda: store.add(drawing(99), label=9), lambda: store.delete([1])):
        before = store.checksum()
        change()
        assert before != store.checksum() == FeedbackStore(store.path).checksum()


def test_reading_many_corrections_holds_them_once(tmp_path):
    # 20,000 corrections, 15.7 MB of pixels: read as a list of rows, then joined and copied, they took three times that.
    path = tmp_path / "fb.sqlite"
    FeedbackStore(path).close()
    db = sqlite3.connect(path)
    rows = [("2024", i % 10, np.full(784, i % 251, np.uint8).tobytes(), str(i)) for i in range(20_000)]
    db.executemany("INSERT INTO corrections (created_utc, label, pixels, drawing_sha256) VALUES (?, ?, ?, ?)", rows)
    db.commit()
    db.close()
    del rows
    store = FeedbackStore(path)
    tracemalloc.start()
    try:
        images, labels, ids = store.images()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert images.shape == (20_000, 28, 28) and images[300, 0, 0] == 300 % 251 and labels[-1] == 19_999 % 10
    assert peak < 1.3 * images.nbytes
    assert ids == list(range(1, 20_001))


def run_cli(*argv: str) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    return exit_info.value.code


def test_cli_stats_list_show_export_delete(tmp_path, capsys):
    db = str(tmp_path / "fb.sqlite")
    filled(db).close()
    assert run_cli("feedback", "stats", "--db", db, "--json") == 0
    assert json.loads(capsys.readouterr().out)["corrections"] == 12
    assert run_cli("feedback", "list", "--db", db, "-n", "3") == 0
    assert len(capsys.readouterr().out.splitlines()) == 3
    assert run_cli("feedback", "show", "--db", db, "-o", str(tmp_path / "fb.png")) == 0
    assert (tmp_path / "fb.png").read_bytes()[:4] == b"\x89PNG"
    # The format as given, or from the name: a .npz file, else a folder of IDX files.
    for fmt, out in (("idx", tmp_path / "idx"), ("npz", tmp_path / "fb.npz"), (None, tmp_path / "named.NPZ")):
        capsys.readouterr()
        assert run_cli("feedback", "export", "--db", db, *(["--format", fmt] if fmt else []), "-o", str(out)) == 0
        assert out.is_file() == (fmt != "idx")
        exported = data.load_path(out)
        images, labels, _ = FeedbackStore(db).images()
        assert np.array_equal(exported.train.images.numpy(), images)
        assert np.array_equal(exported.train.labels.numpy(), labels)
    assert run_cli("feedback", "export", "--db", db, "-o", str(tmp_path / "fb.npz"), "--format", "npz") == 2
    assert "already exists" in capsys.readouterr().err
    # A .npz named without its suffix gets it, as NumPy names it: --data knows the file by it.
    assert run_cli("feedback", "export", "--db", db, "--format", "npz", "-o", str(tmp_path / "plain")) == 0
    assert capsys.readouterr().out == f"wrote 12 corrections to {tmp_path / 'plain.npz'}\n"
    assert len(data.load_path(tmp_path / "plain.npz").train) == 12 and not (tmp_path / "plain").exists()
    assert run_cli("feedback", "delete", "--db", db, "1", "2") == 0
    assert FeedbackStore(db).count() == 10


def test_cli_ids_and_counts_beyond_sqlite_integers_match_nothing(tmp_path, capsys):
    db = str(tmp_path / "fb.sqlite")
    filled(db, n=3).close()
    huge = str(2**70)  # SQLite's integers are 64-bit: passed as they are, Python raises OverflowError
    assert run_cli("feedback", "show", "--db", db, huge, "-o", str(tmp_path / "fb.png")) == 2
    assert f"no corrections to show with ids [{huge}]" in capsys.readouterr().err
    assert run_cli("feedback", "delete", "--db", db, huge, "1") == 1
    assert capsys.readouterr().out == "deleted 1 of 2 corrections\n"
    assert run_cli("feedback", "list", "--db", db, "-n", huge) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


def test_thousands_of_ids_are_shown_and_deleted_whatever_sqlites_limit(tmp_path, monkeypatch):
    # One statement with a value per id failed past SQLite's limit: "too many SQL variables".
    connect = FeedbackStore._connect

    def old_sqlite(self: FeedbackStore) -> sqlite3.Connection:
        db = connect(self)
        db.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)  # as SQLite before 3.32 builds it
        return db

    monkeypatch.setattr(FeedbackStore, "_connect", old_sqlite)
    store = filled(tmp_path / "fb.sqlite", n=30)
    asked = range(-2000, 3000, 3)  # 1,667 ids, 10 of them stored: 1, 4, 7, …, 28
    _, labels, ids = store.images(asked)
    assert ids == list(range(1, 31, 3)) and labels.tolist() == [(i - 1) % 10 for i in ids]
    assert store.delete(asked) == 10 and store.count() == 20


def test_a_negative_count_to_list_is_one_clear_line(tmp_path, capsys):
    db = str(tmp_path / "fb.sqlite")
    store = filled(db, n=3)
    with pytest.raises(FeedbackError, match="the number of corrections to list must be 0 or more, got -1"):
        store.latest(-1)  # SQLite would read LIMIT -1 as no limit at all
    assert store.latest(0) == []
    assert run_cli("feedback", "list", "--db", db, "-n", "-1") == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and "0 or more, got -1" in captured.err


def test_cli_on_a_missing_database_is_one_line(tmp_path, capsys):
    assert run_cli("feedback", "stats", "--db", str(tmp_path / "none.sqlite")) == 2
    err = capsys.readouterr().err
    assert "no corrections database here" in err and "Traceback" not in err


@pytest.mark.parametrize("command", ["stats", "list", "export"])
def test_reading_an_empty_file_leaves_it_empty(tmp_path, capsys, command):
    # An empty file is no database the server wrote; a command that only reads must not make it one.
    empty = tmp_path / "empty.sqlite"
    empty.write_bytes(b"")
    extra = ["-o", str(tmp_path / "out")] if command == "export" else []
    assert run_cli("feedback", command, "--db", str(empty), *extra) == 2
    err = capsys.readouterr().err
    assert (
        err == f"mnistkit: error: {empty}: an empty file, no corrections database yet; pass the file the server wrote\n"
    )
    assert empty.read_bytes() == b"" and sorted(p.name for p in tmp_path.iterdir()) == ["empty.sqlite"]


def not_read(monkeypatch) -> list:
    """A list to which every read of all corrections (``FeedbackStore.images``) adds one, in place of the read."""
    reads: list = []
    monkeypatch.setattr(FeedbackStore, "images", lambda self, ids=None: reads.append(ids))
    return reads


EXPORT_TARGETS = {
    "a missing folder (idx)": ("idx", "no/such/out", "cannot write {out}: No such file or directory; check the folder"),
    "a missing folder (npz)": ("npz", "no/such/out.npz", "cannot write {out}: No such file or directory; check the"),
    "in a file (idx)": ("idx", "a-file/out", "cannot write {out}: Not a directory; check the folder exists"),
    "an existing .npz": ("npz", "taken.npz", "{out}: already exists; choose another output file"),
    "an existing .npz, named without it": ("npz", "taken", "{out}.npz: already exists; choose another output file"),
    "a folder (npz)": ("npz", "full", "{out}: already exists; choose another output file"),
    "the current folder (npz)": ("npz", ".", "{out}: already exists; choose another output file"),
    "a folder with files (idx)": ("idx", "full", "{out}: already exists and is not an empty folder; choose another"),
    "a file (idx)": ("idx", "a-file", "{out}: already exists and is not an empty folder; choose another"),
}


@pytest.mark.parametrize("case", list(EXPORT_TARGETS))
def test_export_to_a_bad_destination_fails_before_reading_the_corrections(tmp_path, capsys, monkeypatch, case):
    # The whole database was read first (for 100,000 corrections, 78 MB and some seconds) and the destination
    # refused only then.
    fmt, target, message = EXPORT_TARGETS[case]
    db = str(tmp_path / "fb.sqlite")
    filled(db).close()
    (tmp_path / "a-file").write_bytes(b"mine")
    (tmp_path / "taken.npz").write_bytes(b"mine")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    reads = not_read(monkeypatch)
    out = tmp_path / target
    assert run_cli("feedback", "export", "--db", db, "--format", fmt, "-o", str(out)) == 2
    err = capsys.readouterr().err
    assert err.startswith("mnistkit: error: " + message.format(out=out)) and err.count("\n") == 1, err
    assert reads == [] and sorted(p.name for p in tmp_path.rglob("*")) == before


def test_export_into_an_empty_folder_still_works(tmp_path, capsys):
    db = str(tmp_path / "fb.sqlite")
    filled(db).close()
    (tmp_path / "empty").mkdir()
    assert run_cli("feedback", "export", "--db", db, "-o", str(tmp_path / "empty")) == 0
    assert len(data.load_path(tmp_path / "empty").train) == 12


def test_export_into_a_read_only_folder_says_so_at_once(tmp_path, read_only):
    db = tmp_path / "fb.sqlite"
    filled(db).close()
    folder = tmp_path / "ro"
    folder.mkdir()
    out = folder / "out"
    command = [*read_only(folder), sys.executable, "-m", "mnistkit", "feedback", "export", "--db", str(db)]
    done = subprocess.run([*command, "-o", str(out)], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr == (
        f"mnistkit: error: cannot write {out}: {folder} is not writable; choose another output, or make it writable\n"
    )
    assert list(folder.iterdir()) == []
