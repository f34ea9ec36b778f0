"""The downloader against a real HTTP server on 127.0.0.1: mirrors, checksums, broken transfers, the cache."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import errno
import gzip
import hashlib
import json
import os
import queue
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import platformdirs
import pytest

from mnistkit import catalog, cli, data, download
from mnistkit.catalog import DatasetSpec
from mnistkit.errors import DataError, DownloadError, WriteError


def _idx_gz(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0)


def _fake_files() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (20, 28, 28)),
        "train-labels-idx1-ubyte.gz": rng.integers(0, 10, 20),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (10, 28, 28)),
        "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, 10),
    }
    return {name: _idx_gz(array) for name, array in arrays.items()}


FILES = _fake_files()


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.served[path]``; for paths in ``server.cut_short`` it promises more bytes than it sends, for
    those in ``server.unsized`` it does not say how many it sends. A path in ``server.scripted`` is answered by
    its function, which writes the raw response (or none) to the handler's ``wfile``."""

    def do_GET(self):
        self.server.requests.append(self.path)
        script = self.server.scripted.get(self.path)
        if script is not None:
            with contextlib.suppress(OSError):  # the client hung up: what these tests are about
                script(self)
            self.close_connection = True
            return
        body = self.server.served.get(self.path)
        if body is None:
            self.send_error(404)
            return
        claimed = len(body) + 1000 if self.path in self.server.cut_short else len(body)
        self.send_response(200)
        if self.path not in self.server.unsized:  # else the body ends when the connection closes
            self.send_header("Content-Length", str(claimed))
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def _server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def server(_server):
    """The shared server, emptied: tests fill ``served`` and ``scripted``, and read ``requests``. Scripts that wait
    (a stalled mirror) wait on ``release``, which is set when the test ends."""
    _server.served, _server.cut_short, _server.unsized, _server.requests = {}, set(), set(), []
    _server.scripted, _server.release = {}, threading.Event()
    _server.url = f"http://127.0.0.1:{_server.server_port}"
    yield _server
    _server.release.set()


def serve(server, mirror: str, files: dict[str, bytes] | None = None) -> str:
    """Put ``files`` (default: the good ones) on the server under ``/mirror/``; return that base URL."""
    for name, body in (FILES if files is None else files).items():
        server.served[f"/{mirror}/{name}"] = body
    return f"{server.url}/{mirror}/"


def script(server, mirror: str, respond, files=FILES) -> str:
    """Answer every file under ``/mirror/`` with ``respond(handler, body)``; return that base URL."""
    for name, body in files.items():
        server.scripted[f"/{mirror}/{name}"] = lambda handler, body=body: respond(handler, body)
    return f"{server.url}/{mirror}/"


def headers(length: int | None = None, *lines: str, status: str = "200 OK") -> bytes:
    length_line = [] if length is None else [f"Content-Length: {length}"]
    return "\r\n".join([f"HTTP/1.1 {status}", *length_line, *lines, "", ""]).encode()


def silent(handler, body):
    handler.server.release.wait()


def stalled_mid_body(handler, body):
    handler.wfile.write(headers(len(body)) + body[: len(body) // 2])
    handler.server.release.wait()


def trickle(data: bytes):
    """Send ``data`` a byte at a time, 20 bytes a second: each byte well within any timeout, the whole never."""

    def send(handler):
        for byte in data:
            handler.wfile.write(bytes([byte]))
            if handler.server.release.wait(0.05):
                return

    return send


def trickled_body(handler, body):
    handler.wfile.write(headers(len(body)))
    trickle(body)(handler)


def trickled_headers(handler, body):
    trickle(headers(len(body), "X-Padding: " + "a" * 10_000))(handler)


def corrupted() -> dict[str, bytes]:
    return {name: body[:-1] + bytes([body[-1] ^ 0xFF]) for name, body in FILES.items()}


@pytest.fixture
def spec() -> DatasetSpec:
    return DatasetSpec(
        name="fake",
        description="generated test data",
        mirrors=(),
        files={name: hashlib.md5(body).hexdigest() for name, body in FILES.items()},
        classes=tuple(catalog.DIGITS),
        citation="none",
    )


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def folder_contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()} if folder.exists() else {}


def test_good_files_download_and_verify(server, spec, tmp_path):
    calls = []
    folder = download.ensure_dataset(
        spec, cache=tmp_path, mirrors=[serve(server, "a")], progress=lambda *a: calls.append(a)
    )
    assert folder == tmp_path / "fake"
    assert folder_contents(folder) == FILES  # no temporary files left beside them
    loaded = data.load_idx_folder(folder)
    assert len(loaded.train) == 20 and len(loaded.test) == 10
    last = {name: (done, total) for name, done, total in calls}
    assert last == {name: (len(body), len(body)) for name, body in FILES.items()}


def test_404_on_first_mirror_falls_through(server, spec, tmp_path):
    mirrors = [f"{server.url}/empty/", serve(server, "b")]
    folder = download.ensure_dataset(spec, cache=tmp_path, mirrors=mirrors)
    assert folder_contents(folder) == FILES
    assert f"/empty/{next(iter(FILES))}" in server.requests


def test_wrong_checksum_falls_through(server, spec, tmp_path):
    mirrors = [serve(server, "bad", corrupted()), serve(server, "good")]
    folder = download.ensure_dataset(spec, cache=tmp_path, mirrors=mirrors)
    assert folder_contents(folder) == FILES


def test_wrong_checksum_everywhere_fails_and_leaves_nothing(server, spec, tmp_path):
    mirrors = [serve(server, "bad1", corrupted()), serve(server, "bad2", corrupted())]
    with pytest.raises(DownloadError) as info:
        download.ensure_dataset(spec, cache=tmp_path, mirrors=mirrors)
    message = str(info.value)
    assert "\n" not in message
    assert message.count("checksum mismatch") == 2
    assert all(name in message for name in FILES) and str(tmp_path / "fake") in message
    assert folder_contents(tmp_path / "fake") == {}


PORTAL_PAGE = b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>Accept the terms</body></html>"


@pytest.mark.parametrize("content_type", ["text/html; charset=utf-8", "application/octet-stream"])
def test_a_web_page_instead_of_the_file_is_named_as_one(server, spec, tmp_path, content_type):
    """A captive portal answers every address with 200 and its login page."""
    portal = script(
        server,
        "portal",
        lambda handler, body: handler.wfile.write(
            headers(len(PORTAL_PAGE), f"Content-Type: {content_type}") + PORTAL_PAGE
        ),
    )
    with pytest.raises(DownloadError) as info:
        download.ensure_dataset(spec, cache=tmp_path, mirrors=[portal])
    message = str(info.value)
    assert f"{portal}: sent a web page, not the data file (a network login page?)" in message
    assert "\n" not in message and "checksum" not in message
    assert folder_contents(tmp_path / "fake") == {}
    folder = download.ensure_dataset(spec, cache=tmp_path, mirrors=[portal, serve(server, "good")])
    assert folder_contents(folder) == FILES


def test_a_data_file_labelled_as_a_web_page_is_still_a_checksum_mismatch(server, spec, tmp_path):
    mislabelled = script(
        server,
        "html",
        lambda handler, body: handler.wfile.write(headers(len(body), "Content-Type: text/html") + body),
        files=corrupted(),
    )
    with pytest.raises(DownloadError) as info:
        download.ensure_dataset(spec, cache=tmp_path, mirrors=[mislabelled])
    assert f"{mislabelled}: checksum mismatch" in str(info.value)


@pytest.mark.parametrize("gzipped_again", [True, False], ids=["gzipped again", "labelled only"])
def test_a_gz_sent_with_content_encoding_gzip_verifies(server, spec, tmp_path, gzipped_again):
    """Asked for identity, a server may still gzip the .gz for the transfer, or label the .gz as gzip-encoded."""
    asked = []

    def encoded(handler, body):
        asked.append(handler.headers["Accept-Encoding"])
        sent = gzip.compress(body) if gzipped_again else body
        handler.wfile.write(headers(len(sent), "Content-Encoding: gzip") + sent)

    folder = download.ensure_dataset(spec, cache=tmp_path, mirrors=[script(server, "encoded", encoded)])
    assert folder_contents(folder) == FILES
    assert asked == ["identity"] * len(FILES)


def test_a_gzip_encoded_wrong_file_is_a_checksum_mismatch(server, spec, tmp_path):
    def encoded(handler, body):
        sent = gzip.compress(body)
        handler.wfile.write(headers(len(sent), "Content-Encoding: gzip") + sent)

    bad = script(server, "bad", encoded, files=corrupted())
    with pytest.raises(DownloadError, match=re.escape(f"{bad}: checksum mismatch")):
        download.ensure_dataset(spec, cache=tmp_path, mirrors=[bad])
    assert folder_contents(tmp_path / "fake") == {}


def raw(make) -> object:
    """A response of the bytes ``make(body)`` gives, written as they are."""
    return lambda handler, body: handler.wfile.write(make(body))


def chunked(*chunks: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks) + b"0\r\n\r\n"


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (  # read up to its length only: a proxy's wrong Content-Length
            lambda body: headers(len(body) - 10) + body,
            f"sent only the first {len(FILES['train-images-idx3-ubyte.gz']) - 10:,} bytes of the file, its gzip "
            "stream broken off (its Content-Length was wrong or the connection was cut)",
        ),
        (lambda body: headers(None, "Transfer-Encoding: chunked") + chunked(body)[:-20], "a chunked transfer cut"),
        (lambda body: headers(None, "Transfer-Encoding: chunked") + b"zz\r\n" + body, "a chunked transfer cut"),
        (lambda body: body, "answered with something other than HTTP"),  # the bytes of a .gz, not their line
        (
            lambda body: b"HTTP/1.1 200 OK\r\nX-\x00\xff: \x1b[31m" + b"a" * 70_000,
            "got more than 65536 bytes when reading header line",
        ),
    ],
    ids=["Content-Length short", "chunks cut short", "chunk size no number", "no status line", "header too long"],
)
def test_a_broken_response_is_one_clear_line_and_the_next_mirror_is_tried(server, spec, tmp_path, make, reason):
    broken = script(server, "broken", raw(make))
    with pytest.raises(DownloadError) as info:
        download.ensure_dataset(spec, cache=tmp_path, mirrors=[broken])
    message = str(info.value)
    assert f"{broken}: {reason}" in message
    assert message.isprintable() and "\\x" not in message and len(message) < 600
    assert folder_contents(tmp_path / "fake") == {}
    folder = download.ensure_dataset(spec, cache=tmp_path, mirrors=[broken, serve(server, "good")])
    assert folder_contents(folder) == FILES


@pytest.mark.parametrize(
    "make",
    [
        lambda body: b"HTTP/1.0 200 OK\r\n\r\n" + body,  # its end is where the connection closes
        lambda body: headers(-5) + body,  # no length: read to the end too
        lambda body: headers(len(body) + 99, "Transfer-Encoding: chunked") + chunked(body[:100], body[100:]),
    ],
    ids=["HTTP/1.0 without length", "negative Content-Length", "chunked beside a Content-Length"],
)
def test_a_response_sized_as_http_allows_verifies(server, spec, tmp_path, make):
    folder = download.ensure_dataset(spec, cache=tmp_path, mirrors=[script(server, "odd", raw(make))])
    assert folder_contents(folder) == FILES


def test_transfer_cut_short_falls_through(server, spec, tmp_path):
    short = serve(server, "short")
    server.cut_short.update(path for path in server.served if path.startswith("/short/"))
    folder = download.ensure_dataset(spec, cache=tmp_path, mirrors=[short, serve(server, "good")])
    assert folder_contents(folder) == FILES
    assert len([r for r in server.requests if r.startswith("/short/")]) == len(FILES)


def test_transfer_cut_short_everywhere_says_so(server, spec, tmp_path):
    short = serve(server, "short")
    server.cut_short.update(server.served)
    with pytest.raises(DownloadError, match="transfer cut short"):
        download.ensure_dataset(spec, cache=tmp_path, mirrors=[short])
    assert folder_contents(tmp_path / "fake") == {}


CUT_SHORT = "bytes of the file, its gzip stream broken off (its Content-Length was wrong or the connection was cut)"


@pytest.mark.parametrize("known_size", [False, True], ids=["no size known", "size in the catalog"])
@pytest.mark.parametrize(
    "make",
    [
        lambda body: headers(1000) + body,  # a proxy's Content-Length, shorter than the file: read up to it only
        lambda body: b"HTTP/1.0 200 OK\r\n\r\n" + body[:1000],  # no length: it ends where the connection does
        lambda body: headers(None, "Transfer-Encoding: chunked") + chunked(body[:1000]),  # re-chunked by a proxy
    ],
    ids=["Content-Length short", "connection cut", "chunked"],
)
def test_a_file_cut_short_where_its_length_said_it_was_whole_is_named_as_one(server, spec, tmp_path, make, known_size):
    """Not a checksum mismatch, which would send the user looking for a tampered mirror."""
    if known_size:  # verified by its uncompressed MD5 too, as MNIST is: inflated (and found to end early) for that
        unpacked = {name.removesuffix(".gz"): gzip.decompress(body) for name, body in FILES.items()}
        spec = dataclasses.replace(
            spec,
            md5_uncompressed={stem: hashlib.md5(data).hexdigest() for stem, data in unpacked.items()},
            size_uncompressed={stem: len(data) for stem, data in unpacked.items()},
        )
    short = script(server, "short", raw(make))
    with pytest.raises(DownloadError) as info:
        download.ensure_dataset(spec, cache=tmp_path, mirrors=[short])
    message = str(info.value)
    assert f"{short}: sent only the first 1,000 {CUT_SHORT}" in message
    assert "checksum" not in message and "\n" not in message
    folder = download.ensure_dataset(spec, cache=tmp_path, mirrors=[short, serve(server, "good")])
    assert folder_contents(folder) == FILES


def tampered(change) -> dict[str, bytes]:
    return {name: change(bytearray(body)) for name, body in FILES.items()}


def flip(where):
    """A change of a file: the byte at ``where(its length)`` flipped."""

    def change(body: bytearray) -> bytes:
        body[where(len(body))] ^= 0xFF
        return bytes(body)

    return change


@pytest.mark.parametrize(
    "change",
    [flip(lambda n: 20), flip(lambda n: n // 2), flip(lambda n: n - 6), lambda body: bytes(body + b"\0x")],
    ids=["early byte", "middle byte", "in its CRC", "a byte more"],
)
def test_a_whole_file_tampered_with_is_a_checksum_mismatch_not_a_short_one(server, spec, tmp_path, change):
    bad = serve(server, "bad", tampered(change))
    with pytest.raises(DownloadError) as info:
        download.ensure_dataset(spec, cache=tmp_path, mirrors=[bad])
    message = str(info.value)
    assert f"{bad}: checksum mismatch" in message and CUT_SHORT not in message


def test_a_mirror_sending_more_than_a_data_file_holds_is_cut_off(server, spec, tmp_path, monkeypatch):
    monkeypatch.setattr(download.idx, "MAX_FILE_BYTES", 10_000)  # as if the mirror sent more than 1 GiB
    huge = {name: bytes(20_000) for name in FILES}
    said = serve(server, "said", huge)  # Content-Length says so: refused before the body is read
    unsaid = serve(server, "unsaid", huge)  # no Content-Length: stopped once past the limit
    server.unsized.update(f"/unsaid/{name}" for name in FILES)
    with pytest.raises(DownloadError) as info:
        download.ensure_dataset(spec, cache=tmp_path, mirrors=[said, unsaid])
    message = str(info.value)
    assert "a file of 20,000 bytes, more than the 10,000 a data file may hold" in message
    assert "sent more than the 10,000 bytes a data file may hold" in message
    assert folder_contents(tmp_path / "fake") == {}  # nothing half-written left behind


def test_refused_connection_fails_fast_with_one_line(spec, tmp_path, closed_port):
    start = time.monotonic()
    with pytest.raises(DownloadError) as info:
        download.ensure_dataset(spec, cache=tmp_path, mirrors=[f"http://127.0.0.1:{closed_port}/"])
    assert time.monotonic() - start < 2
    message = str(info.value)
    assert "\n" not in message and "refused" in message.lower()
    assert ", ".join(FILES) in message


def test_unreachable_mirror_is_skipped_for_the_remaining_files(server, spec, tmp_path, closed_port, monkeypatch):
    opened = []
    real_open = download._open
    monkeypatch.setattr(download, "_open", lambda url, watch: opened.append(url) or real_open(url, watch))
    dead = f"http://127.0.0.1:{closed_port}/"
    download.ensure_dataset(spec, cache=tmp_path, mirrors=[dead, serve(server, "good")])
    assert len([url for url in opened if url.startswith(dead)]) == 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("respond", "reason"),
    [(silent, "no answer within 0.5 s"), (stalled_mid_body, "stalled: nothing received for 0.5 s")],
    ids=["silent", "stalled mid-body"],
)
def test_a_silent_or_stalled_mirror_times_out_and_the_next_is_tried(
    server, spec, tmp_path, monkeypatch, respond, reason
):
    monkeypatch.setattr(download, "TIMEOUT", 0.5)
    stuck = script(server, "stuck", respond)
    folder = download.ensure_dataset(spec, cache=tmp_path, mirrors=[stuck, serve(server, "good")])
    assert folder_contents(folder) == FILES
    assert len([r for r in server.requests if r.startswith("/stuck/")]) == 1  # not waited on again for each file
    start = time.monotonic()
    with pytest.raises(DownloadError) as info:
        download.ensure_dataset(spec, cache=tmp_path / "alone", mirrors=[stuck])
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert f"{stuck}: {reason}" in message and "\n" not in message
    assert folder_contents(tmp_path / "alone" / "fake") == {}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("respond", [trickled_body, trickled_headers], ids=["body", "headers"])
def test_a_trickling_mirror_is_cut_off_as_too_slow(server, spec, tmp_path, monkeypatch, respond):
    """A byte every 50 ms: every read arrives well within TIMEOUT, so only a minimum rate ends it."""
    monkeypatch.setattr(download, "LOW_SPEED_TIME", 1.0)
    slow = script(server, "slow", respond)
    folder = download.ensure_dataset(spec, cache=tmp_path, mirrors=[slow, serve(server, "good")])
    assert folder_contents(folder) == FILES
    assert len([r for r in server.requests if r.startswith("/slow/")]) == 1
    with pytest.raises(DownloadError) as info:
        download.ensure_dataset(spec, cache=tmp_path / "alone", mirrors=[slow])
    message = str(info.value)
    assert f"{slow}: too slow: under 1,024 bytes/s for 1 s" in message and "\n" not in message
    assert folder_contents(tmp_path / "alone" / "fake") == {}


def redirect(location) -> object:
    """A response redirecting to ``location(body)``, or to ``location`` if it is a string."""

    def respond(handler, body):
        target = location if isinstance(location, str) else location(body)
        handler.wfile.write(headers(0, f"Location: {target}", status="302 Found"))

    return respond


def test_a_redirect_to_another_mirror_is_followed(server, spec, tmp_path):
    good = serve(server, "good")
    names = {body: name for name, body in FILES.items()}
    moved = script(server, "moved", redirect(lambda body: good + names[body]))
    folder = download.ensure_dataset(spec, cache=tmp_path, mirrors=[moved])
    assert folder_contents(folder) == FILES


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("file:///etc/passwd", "refused a redirect to file: (only http and https are followed)"),
        ("ftp://127.0.0.1:21/data.gz", "refused a redirect to ftp: (only http and https are followed)"),
        ("//127.0.0.1:1/" + "a" * 10_000, "a redirect to a URL of 10,014 characters, more than 8,192"),
        ("", "a redirect without a Location"),
        ("http://[::1/data.gz", "a redirect to a malformed URL"),
    ],
    ids=["file", "ftp", "long URL", "no Location", "malformed"],
)
def test_a_redirect_that_must_not_be_followed_is_refused_in_one_line(server, spec, tmp_path, location, reason):
    moved = script(server, "moved", redirect(location))
    with pytest.raises(DownloadError) as info:
        download.ensure_dataset(spec, cache=tmp_path, mirrors=[moved])
    message = str(info.value)
    assert f"{moved}: {reason}" in message and "\n" not in message


def test_a_redirect_to_a_file_url_falls_through_to_the_next_mirror(server, spec, tmp_path):
    secret = tmp_path / "secret.gz"
    secret.write_bytes(FILES["train-images-idx3-ubyte.gz"])  # even the right bytes are not read from the disk
    moved = script(server, "moved", redirect(secret.as_uri()))
    folder = download.ensure_dataset(spec, cache=tmp_path, mirrors=[moved, serve(server, "good")])
    assert folder_contents(folder) == FILES
    assert len([r for r in server.requests if r.startswith("/good/")]) == len(FILES)


def test_a_redirect_loop_and_a_long_chain_end_in_one_line(server, spec, tmp_path, monkeypatch):
    loop = script(server, "loop", redirect(lambda body: server.url + "/loop/" + next(iter(FILES))))
    with pytest.raises(DownloadError, match=re.escape(f"{loop}: a redirect loop")):
        download.ensure_dataset(spec, cache=tmp_path, mirrors=[loop])
    monkeypatch.setattr(download, "MAX_REDIRECTS", 2)
    hops = [f"{server.url}/hop{i}/{name}" for i, name in enumerate(FILES)]
    for here, there in zip(hops, [*hops[1:], hops[0]]):
        server.scripted[here.removeprefix(server.url)] = lambda handler, there=there: redirect(there)(handler, b"")
    first = hops[0].rsplit("/", 1)[0]
    with pytest.raises(DownloadError, match=re.escape(f"{first}: more than 2 redirects")):
        download.ensure_dataset(spec, cache=tmp_path, mirrors=[first])


def test_a_redirect_with_an_endless_page_is_not_read(server, spec, tmp_path):
    """urllib's own redirect handler read the page of a redirect to its end, into memory."""
    good = serve(server, "good")
    names = {body: name for name, body in FILES.items()}
    ends: queue.Queue[str] = queue.Queue()

    def endless_redirect(handler, body):
        handler.wfile.write(headers(None, f"Location: {good + names[body]}", status="302 Found"))
        try:
            for _ in range(1 << 10):  # 64 MiB, far more than the sockets' buffers hold unread
                handler.wfile.write(bytes(1 << 16))
            ends.put("all sent")
        except OSError:
            ends.put("hung up")

    moved = script(server, "moved", endless_redirect)
    folder = download.ensure_dataset(spec, cache=tmp_path, mirrors=[moved])
    assert folder_contents(folder) == FILES
    assert [ends.get(timeout=30) for _ in FILES] == ["hung up"] * len(FILES)


@pytest.fixture
def no_proxy_to_the_internet(monkeypatch, closed_port):
    """Were a test to fall through to a catalog mirror, it reaches a closed port, never the network."""
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{closed_port}")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")


def test_a_full_disk_stops_the_download_in_one_line_that_says_what_to_do(
    server, spec, tmp_path, monkeypatch, capsys, no_proxy_to_the_internet
):
    """ENOSPC where the file system reports it, at fsync: no other mirror is tried, nothing is left half-written."""
    real_fsync = os.fsync

    def fsync(fd):
        if "/fake/." in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setitem(catalog.CATALOG, "fake", spec)
    monkeypatch.setenv("MNISTKIT_DATA", str(tmp_path))
    monkeypatch.setenv("MNISTKIT_MIRRORS", f"{serve(server, 'a')},{serve(server, 'b')}")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["data", "download", "fake"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        f"mnistkit: error: cannot write {tmp_path / 'fake' / next(iter(FILES))}: No space left on device; "
        "free some space, or set MNISTKIT_DATA to a folder on a disk with room\n"
    )
    assert not [r for r in server.requests if r.startswith("/b/")]
    assert folder_contents(tmp_path / "fake") == {}
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert folder_contents(download.ensure_dataset("fake")) == FILES


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_a_cache_that_cannot_be_written_says_where_to_put_it(server, spec, tmp_path, monkeypatch, code):
    """As root, a read-only folder is written anyway: the file system's refusal is made where it would be."""
    mkstemp = tempfile.mkstemp

    def refused(suffix=None, prefix=None, dir=None, text=False):
        if dir is not None and Path(dir).is_relative_to(tmp_path):
            raise OSError(code, os.strerror(code))
        return mkstemp(suffix, prefix, dir, text)

    monkeypatch.setattr(tempfile, "mkstemp", refused)
    with pytest.raises(WriteError) as info:
        download.ensure_dataset(spec, cache=tmp_path, mirrors=[serve(server, "a")])
    assert str(info.value) == (
        f"cannot write {tmp_path / 'fake' / next(iter(FILES))}: {os.strerror(code)}; "
        "set MNISTKIT_DATA to a folder you can write to"
    )
    assert folder_contents(tmp_path / "fake") == {}


# ``mnistkit data download fake`` in a process of its own, ``fake`` being the test's files (their MD5s in argv[1]).
DOWNLOAD_FAKE = """
import json, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # a Ctrl-C, even where the test runner ignores SIGINT
from mnistkit import catalog
files = json.loads(sys.argv[1])
catalog.CATALOG["fake"] = catalog.DatasetSpec("fake", "test data", (), files, tuple(catalog.DIGITS), "none")
from mnistkit.cli import main
main(["data", "download", "fake"])
"""


def start_download(spec: DatasetSpec, cache: Path, mirror: str, script: str = DOWNLOAD_FAKE, *args: str):
    env = {**os.environ, "MNISTKIT_DATA": str(cache), "MNISTKIT_MIRRORS": mirror}
    argv = [sys.executable, "-c", script, json.dumps(spec.files), *args]
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_until(condition, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"still not so after {timeout} s")
        time.sleep(0.01)


@pytest.mark.timeout(120)
def test_ctrl_c_during_a_download_leaves_nothing_and_exits_130(server, spec, tmp_path):
    sent = threading.Event()

    def half_then_wait(handler, body):
        handler.wfile.write(headers(len(body)) + body[: len(body) // 2])
        sent.set()
        handler.server.release.wait()

    process = start_download(spec, tmp_path, script(server, "half", half_then_wait))
    try:
        assert sent.wait(60)
        wait_until(lambda: any((tmp_path / "fake").glob(".*.tmp")))  # writing the file: the body is being read
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert (process.returncode, err, out) == (130, "mnistkit: interrupted\n", "")
    assert folder_contents(tmp_path / "fake") == {}  # neither the file nor its temporary file


STUCK_HOST = "stuck.invalid"


@pytest.fixture
def no_proxy(monkeypatch):
    """Connections go where their URLs say, so that the name looked up is the mirror's, not a proxy's."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def stuck_resolver(monkeypatch, no_proxy) -> list[str]:
    """A resolver that never answers for STUCK_HOST (until the test ends); the names it was asked for that one."""
    asked: list[str] = []
    release = threading.Event()
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if host == STUCK_HOST:
            asked.append(host)
            release.wait()
            raise socket.gaierror(socket.EAI_AGAIN, "the test is over")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield asked
    release.set()


@pytest.mark.timeout(60)
def test_a_name_lookup_that_hangs_is_given_up_and_the_next_mirror_tried(
    server, spec, tmp_path, monkeypatch, stuck_resolver
):
    monkeypatch.setattr(download, "TIMEOUT", 0.5)
    stuck = f"http://{STUCK_HOST}/"
    folder = download.ensure_dataset(spec, cache=tmp_path, mirrors=[stuck, serve(server, "good")])
    assert folder_contents(folder) == FILES
    assert stuck_resolver == [STUCK_HOST]  # not waited on again for each file
    with pytest.raises(DownloadError) as info:
        download.ensure_dataset(spec, cache=tmp_path / "alone", mirrors=[stuck])
    message = str(info.value)
    assert f"{stuck}: looking up {STUCK_HOST} took longer than 0.5 s" in message and "\n" not in message
    assert folder_contents(tmp_path / "alone" / "fake") == {}


def localhost_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for ``localhost`` alone (no IP address), and its key: the files' paths."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "localhost.pem", folder / "localhost.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@pytest.fixture
def tls_server(tmp_path, monkeypatch, no_proxy):
    """An https server on 127.0.0.1, as ``server`` is, whose certificate (for ``localhost``) the client trusts."""
    cert, key = localhost_certificate(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # what OpenSSL's default verify paths are, read per context
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    tls = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    tls.socket = context.wrap_socket(tls.socket, server_side=True)
    tls.daemon_threads = True
    tls.served, tls.cut_short, tls.unsized, tls.requests, tls.scripted = {}, set(), set(), [], {}
    tls.url = f"https://localhost:{tls.server_port}"
    thread = threading.Thread(target=tls.serve_forever, daemon=True)
    thread.start()
    yield tls
    tls.shutdown()
    tls.server_close()


def test_https_checks_the_certificate_against_the_mirrors_name(tls_server, spec, tmp_path):
    """The connection is made to the address looked up, and TLS is still told the name."""
    by_name = serve(tls_server, "good")
    assert folder_contents(download.ensure_dataset(spec, cache=tmp_path, mirrors=[by_name])) == FILES
    by_address = by_name.replace("localhost", "127.0.0.1")  # a name the certificate is not for
    with pytest.raises(DownloadError) as info:
        download.ensure_dataset(spec, cache=tmp_path / "other", mirrors=[by_address])
    assert f"{by_address}: [SSL: CERTIFICATE_VERIFY_FAILED]" in str(info.value)
    assert "not valid for '127.0.0.1'" in str(info.value)


# DOWNLOAD_FAKE with download.TIMEOUT set to argv[2], and a resolver that never answers for STUCK_HOST; it says on
# stdout when it is asked.
DOWNLOAD_FAKE_STUCK_RESOLVER = f"""
import socket, sys, threading
from mnistkit import download
download.TIMEOUT = float(sys.argv[2])
real_getaddrinfo = socket.getaddrinfo
def getaddrinfo(host, *args, **kwargs):
    if host == {STUCK_HOST!r}:
        print("looking up", flush=True)
        threading.Event().wait()
    return real_getaddrinfo(host, *args, **kwargs)
socket.getaddrinfo = getaddrinfo
{DOWNLOAD_FAKE}"""


@pytest.mark.timeout(120)
def test_a_lookup_that_never_ends_does_not_hold_up_the_exit(server, spec, tmp_path, no_proxy):
    mirrors = f"http://{STUCK_HOST}/,{serve(server, 'good')}"
    process = start_download(spec, tmp_path, mirrors, DOWNLOAD_FAKE_STUCK_RESOLVER, "0.5")
    try:
        out, err = process.communicate(timeout=60)  # a lookup thread that the exit waited for: forever
    finally:
        process.kill()
    assert (process.returncode, err) == (0, "")
    assert out == f"looking up\nfake: verified files in {tmp_path / 'fake'}\n"


@pytest.mark.timeout(120)
def test_ctrl_c_while_a_name_lookup_hangs_exits_130(spec, tmp_path, no_proxy):
    process = start_download(spec, tmp_path, f"http://{STUCK_HOST}/", DOWNLOAD_FAKE_STUCK_RESOLVER, "3600")
    try:
        assert process.stdout.readline() == "looking up\n"
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert (process.returncode, err, out) == (130, "mnistkit: interrupted\n", "")
    assert folder_contents(tmp_path / "fake") == {}


@pytest.mark.timeout(120)
def test_two_processes_downloading_at_once_both_succeed_with_one_whole_copy(server, spec, tmp_path):
    both_writing = threading.Barrier(2, timeout=60)
    first = next(iter(FILES))

    def together(handler, body):
        handler.wfile.write(headers(len(body)) + body[: len(body) // 2])
        if handler.path.endswith(first):
            both_writing.wait()  # each process has its temporary file open, half written
        handler.wfile.write(body[len(body) // 2 :])

    mirror = script(server, "shared", together)
    processes = [start_download(spec, tmp_path, mirror) for _ in range(2)]
    try:
        results = [process.communicate(timeout=90) for process in processes]
    finally:
        for process in processes:
            process.kill()
    assert [process.returncode for process in processes] == [0, 0], results
    assert results == [(f"fake: verified files in {tmp_path / 'fake'}\n", "")] * 2
    assert not both_writing.broken
    assert folder_contents(tmp_path / "fake") == FILES


def test_verified_files_are_not_fetched_again(server, spec, tmp_path):
    folder = tmp_path / "fake"
    folder.mkdir()
    for name, body in FILES.items():
        (folder / name).write_bytes(body)
    broken = next(iter(FILES))
    (folder / broken).write_bytes(b"junk")
    download.ensure_dataset(spec, cache=tmp_path, mirrors=[serve(server, "a")])
    assert server.requests == [f"/a/{broken}"]
    assert folder_contents(folder) == FILES
    server.requests.clear()
    download.ensure_dataset(spec, cache=tmp_path, mirrors=[serve(server, "a")])
    assert server.requests == []


@pytest.mark.timeout(60)
def test_a_fifo_or_device_in_the_cache_is_fetched_again_not_read(server, spec, tmp_path):
    folder = tmp_path / "fake"
    folder.mkdir()
    fifo, device, *good = FILES
    os.mkfifo(folder / fifo)  # opened the usual way, it would wait for a writer forever
    (folder / device).symlink_to("/dev/zero")  # hashed the usual way, it would be read forever
    for name in good:
        (folder / name).write_bytes(FILES[name])
    download.ensure_dataset(spec, cache=tmp_path, mirrors=[serve(server, "a")])
    assert sorted(server.requests) == sorted([f"/a/{fifo}", f"/a/{device}"])
    assert folder_contents(folder) == FILES


def test_recompressed_copy_verifies_by_its_uncompressed_md5(tmp_path):
    """A user who copies the bundled MNIST into the cache needs no download: its content matches."""
    folder = tmp_path / "mnist"
    shutil.copytree(catalog.BUNDLED_DIR, folder)
    assert download.ensure_dataset("mnist", cache=tmp_path, mirrors=[]) == folder
    assert download.dataset_info("mnist", cache=tmp_path)["status"] == "bundled, downloaded"


def gzip_bomb(size: int) -> bytes:
    """A .gz of 64 KiB a MiB of ``size``: an IDX header declaring 20,000 images (15.7 MB, within the limit of what
    a data file may hold, so reading it is bounded by that alone), then zeros."""
    header = struct.pack(">BBBB", 0, 0, 0x08, 3) + struct.pack(">3I", 20_000, 28, 28)
    deflate = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    return deflate.compress(header) + b"".join(deflate.compress(zeros) for _ in range(size >> 20)) + deflate.flush()


@pytest.fixture
def inflated(monkeypatch) -> list[int]:
    """How many bytes each gzip stream read in the test inflated to, in the order they were opened."""
    counts: list[int] = []

    class CountingGzipFile(gzip.GzipFile):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._count = len(counts)
            counts.append(0)

        def read(self, size=-1):
            data = super().read(size)
            counts[self._count] += len(data)
            return data

    monkeypatch.setattr(gzip, "GzipFile", CountingGzipFile)
    return counts


@pytest.mark.parametrize("known_size", [True, False], ids=["size in the catalog", "no size known"])
def test_a_gzip_bomb_is_inflated_no_further_than_the_real_file(
    server, spec, tmp_path, monkeypatch, inflated, known_size
):
    """A re-compressed copy verifies by its uncompressed MD5, which is taken as it inflates: no further than the
    catalog's size of the file (else the limit of a data file), and in constant memory. Telling a file cut short
    from a wrong one inflates it again, as far."""
    stems = {name: name.removesuffix(".gz") for name in FILES}
    sizes = {stems[name]: len(gzip.decompress(body)) for name, body in FILES.items()}
    spec = dataclasses.replace(
        spec,
        md5_uncompressed={stems[name]: hashlib.md5(gzip.decompress(body)).hexdigest() for name, body in FILES.items()},
        size_uncompressed=sizes if known_size else {},
    )
    monkeypatch.setattr(download.idx, "MAX_FILE_BYTES", 32 << 20)
    peaks, md5_uncompressed = [], download._md5_uncompressed

    def traced(raw, limit):
        tracemalloc.start()
        try:
            return md5_uncompressed(raw, limit)
        finally:
            peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()

    monkeypatch.setattr(download, "_md5_uncompressed", traced)
    bombs = {name: gzip_bomb(64 << 20) for name in FILES}
    with pytest.raises(DownloadError) as info:
        download.ensure_dataset(spec, cache=tmp_path, mirrors=[serve(server, "bomb", bombs)])
    assert "bomb/: checksum mismatch" in str(info.value)
    assert len(inflated) == 2  # its MD5, then whether it ends early
    assert max(inflated) <= (sizes["train-images-idx3-ubyte"] if known_size else 32 << 20) + 1
    assert peaks and max(peaks) < 1 << 20  # not the 15.7 MB the header declares, nor twice that
    recompressed = {
        name: gzip.compress(gzip.decompress(body), compresslevel=1, mtime=1) for name, body in FILES.items()
    }
    mirrors = [serve(server, "bomb", bombs), serve(server, "re", recompressed)]
    assert folder_contents(download.ensure_dataset(spec, cache=tmp_path, mirrors=mirrors)) == recompressed


def test_environment_variables_are_honoured(server, spec, tmp_path, monkeypatch, closed_port):
    spec = dataclasses.replace(spec, mirrors=(f"http://127.0.0.1:{closed_port}/",))
    monkeypatch.setenv("MNISTKIT_DATA", str(tmp_path / "cache"))
    serve(server, "proxy/fake")
    monkeypatch.setenv("MNISTKIT_MIRRORS", f" {server.url}/nothing/ , {server.url}/proxy/{{name}}/")
    assert download.cache_dir() == tmp_path / "cache"
    assert download.mirror_urls(spec) == [f"{server.url}/nothing/", f"{server.url}/proxy/fake/", spec.mirrors[0]]
    folder = download.ensure_dataset(spec)
    assert folder == tmp_path / "cache" / "fake"
    assert folder_contents(folder) == FILES


def test_cache_dir_defaults_to_the_user_cache(monkeypatch):
    monkeypatch.delenv("MNISTKIT_DATA", raising=False)
    assert download.cache_dir() == Path(platformdirs.user_cache_dir("mnistkit")) / "datasets"


def test_catalog_entries_are_complete():
    for spec in catalog.CATALOG.values():
        assert list(spec.files) == list(catalog.IDX_FILES.values())
        assert all(len(md5) == 32 for md5 in spec.files.values())
        assert len(spec.classes) == 10 and spec.mirrors
    assert catalog.get_spec("mnist").md5_uncompressed == catalog.MNIST_MD5
    sizes = {
        stem: len(gzip.decompress((catalog.BUNDLED_DIR / f"{stem}.gz").read_bytes())) for stem in catalog.MNIST_MD5
    }
    assert catalog.get_spec("mnist").size_uncompressed == sizes


@pytest.mark.parametrize("name", ["fashion-mnist", "Fashion-MNIST", "fashion_mnist", "fashionmnist"])
def test_get_spec_accepts_aliases(name):
    assert catalog.get_spec(name).name == "fashion-mnist"


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(DataError, match="mnist, fashion-mnist, kmnist") as info:
        catalog.get_spec("emnist")
    assert "\n" not in str(info.value)


def test_dataset_info_and_list(tmp_path, monkeypatch, spec):
    monkeypatch.setenv("MNISTKIT_DATA", str(tmp_path))
    entries = {entry["name"]: entry for entry in download.list_datasets()}
    assert list(entries) == ["mnist", "fashion-mnist", "kmnist"]
    assert entries["mnist"]["bundled"]["verified"] and entries["mnist"]["status"] == "bundled"
    assert entries["kmnist"]["status"] == "not downloaded" and "bundled" not in entries["kmnist"]
    assert entries["kmnist"]["folder"] == str(tmp_path / "kmnist")

    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "train-images-idx3-ubyte.gz").write_bytes(FILES["train-images-idx3-ubyte.gz"])
    (tmp_path / "fake" / "t10k-images-idx3-ubyte.gz").write_bytes(b"junk")
    info = download.dataset_info(spec)
    assert info["files"]["train-images-idx3-ubyte.gz"] == {
        "present": True,
        "size": len(FILES["train-images-idx3-ubyte.gz"]),
        "verified": True,
    }
    assert info["files"]["t10k-images-idx3-ubyte.gz"] == {"present": True, "size": 4, "verified": False}
    assert info["files"]["train-labels-idx1-ubyte.gz"] == {"present": False, "size": None, "verified": False}
    assert info["status"] == "1 of 4 files corrupt"
