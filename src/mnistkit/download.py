"""Named datasets: where to fetch them, a checksum-verified download into a cache, and what is on disk.

Each dataset lives in ``cache_dir() / name`` as the four official IDX ``.gz`` files. A file is kept only once
its MD5 matches the catalog, so a folder never holds a half-downloaded or tampered file under its real name.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import os
import queue
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path

import platformdirs

from . import fileio, idx
from .catalog import BUNDLED_DIR, CATALOG, MNIST_MD5, DatasetSpec, get_spec
from .errors import FULL_DISK, DataError, DownloadError, WriteError
from .fileio import atomic_path

# urllib applies this to the connection and to every read, and ``_lookup`` to the name lookup before them, so a dead
# or stalled mirror, or a resolver that hangs, costs at most this long.
TIMEOUT = 10.0
# And a mirror must send at least LOW_SPEED bytes a second, over every LOW_SPEED_TIME seconds (curl's --speed-limit
# and --speed-time): one trickling a byte a second is cut off, though each of its reads is well within TIMEOUT.
LOW_SPEED = 1024
LOW_SPEED_TIME = 30.0
CHUNK = 1 << 16
GZIP_MAGIC = b"\x1f\x8b"
# Redirects are followed this many times, to http(s) URLs of at most this many characters (what servers accept).
MAX_REDIRECTS = 5
MAX_URL_LENGTH = 8192
REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})

BytesCallback = Callable[[str, int, int | None], None]  # (file name, bytes done, total bytes or None if unknown)


# --------------------------------------------------------------------------------------------------
# Names and places


def _resolve(dataset: str | DatasetSpec) -> DatasetSpec:
    return dataset if isinstance(dataset, DatasetSpec) else get_spec(dataset)


def cache_dir() -> Path:
    """Where downloaded datasets live: ``$MNISTKIT_DATA``, else the user's cache folder."""
    env = os.environ.get("MNISTKIT_DATA")
    if env:
        return fileio.expanded(env)
    return Path(platformdirs.user_cache_dir("mnistkit")) / "datasets"


def dataset_dir(dataset: str | DatasetSpec, cache: str | os.PathLike | None = None) -> Path:
    root = fileio.expanded(cache) if cache is not None else cache_dir()
    return root / _resolve(dataset).name


def mirror_urls(dataset: str | DatasetSpec) -> list[str]:
    """``$MNISTKIT_MIRRORS`` (comma-separated, for a proxy or a local copy) first, then the catalog's mirrors.

    ``{name}`` in a URL becomes the dataset's name, so one setting can serve every dataset.
    """
    spec = _resolve(dataset)
    extra = [url.strip() for url in os.environ.get("MNISTKIT_MIRRORS", "").split(",") if url.strip()]
    urls: list[str] = []
    for url in (*extra, *spec.mirrors):
        url = url.replace("{name}", spec.name)
        if url not in urls:
            urls.append(url)
    return urls


# --------------------------------------------------------------------------------------------------
# Verifying files


def _verifies(path: Path, filename: str, spec: DatasetSpec) -> bool:
    """Whether ``path`` holds the catalog's ``filename``.

    A copy re-compressed elsewhere (such as the bundled MNIST) has a different .gz MD5, so where the catalog
    knows the MD5 of the uncompressed bytes, that is accepted too.
    """
    try:
        # Read as every data file is: a FIFO or device left in the cache is refused, not waited on or read forever.
        raw = fileio.read_regular(path, idx.MAX_FILE_BYTES)
    except OSError:
        return False
    if hashlib.md5(raw).hexdigest() == spec.files[filename]:
        return True
    stem = filename.removesuffix(".gz")
    if stem not in spec.md5_uncompressed:
        return False
    return _md5_uncompressed(raw, _inflate_limit(filename, spec)) == spec.md5_uncompressed[stem]


def _inflate_limit(filename: str, spec: DatasetSpec) -> int:
    """How far ``filename`` is inflated at most: the catalog's size of its IDX bytes, else the limit of a data file."""
    return spec.size_uncompressed.get(filename.removesuffix(".gz"), idx.MAX_FILE_BYTES)


def _md5_uncompressed(raw: bytes, limit: int) -> str | None:
    """The MD5 of ``raw`` gunzipped (of ``raw`` itself if it is not gzipped, as ``idx.md5_of`` takes a file), or None
    if it is a broken gzip stream or inflates to more than ``limit`` bytes. Hashed as it inflates: a gzip bomb (a
    small file inflating to gigabytes) costs no memory, and no more time than ``limit`` bytes."""
    if raw[:2] != GZIP_MAGIC:
        return hashlib.md5(raw).hexdigest()
    md5 = hashlib.md5()
    try:
        for chunk in _inflated(raw, limit):
            md5.update(chunk)
    except (OSError, EOFError, zlib.error, ValueError):
        return None
    return md5.hexdigest()


def _inflated(raw: bytes, limit: int) -> Iterator[bytes]:
    """``raw`` gunzipped, in chunks; ValueError once they pass ``limit`` bytes, before any more is inflated."""
    size = 0
    with gzip.GzipFile(fileobj=io.BytesIO(raw)) as stream:
        while chunk := stream.read(min(CHUNK, limit + 1 - size)):
            size += len(chunk)
            if size > limit:
                raise ValueError(f"inflates to more than {limit:,} bytes")
            yield chunk


def _ends_early(raw: bytes, limit: int) -> bool:
    """Whether ``raw`` is the start of a gzip stream, the rest missing: sound as far as it goes, it ends before the
    stream's own end (checked no further than ``limit`` bytes inflated, as ``_md5_uncompressed`` is)."""
    if raw[:2] != GZIP_MAGIC:
        return False
    try:
        for _ in _inflated(raw, limit):
            pass
    except EOFError:  # gzip's word for a stream that stops before its end-of-stream marker and trailer
        return True
    except (OSError, zlib.error, ValueError):  # broken or a bomb: a wrong file, not a short one
        return False
    return False


def _bundled_mnist_verifies() -> bool:
    try:
        return all(idx.md5_of(BUNDLED_DIR / f"{stem}.gz") == md5 for stem, md5 in MNIST_MD5.items())
    except DataError:
        return False


# --------------------------------------------------------------------------------------------------
# Downloading


class _MirrorFailed(Exception):
    """One mirror could not deliver one file; the download goes on with the next mirror.

    ``unreachable`` means no connection could be made, or the mirror stalled or was too slow, so it is not tried
    again for the other files: with no network, a download then fails after one attempt per mirror instead of one
    per mirror and file, and a trickling mirror costs its time once.
    """

    def __init__(self, reason: str, unreachable: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.unreachable = unreachable


def _why(exc: BaseException) -> str:
    """A few words on why a mirror failed, for the one-line error."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, urllib.error.URLError):
        return _why(exc.reason) if isinstance(exc.reason, BaseException) else str(exc.reason)
    if isinstance(exc, TimeoutError):
        return f"no answer within {TIMEOUT:g} s"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "closed the connection without answering"
    if isinstance(exc, http.client.BadStatusLine):  # whose text is the line the server sent: any bytes at all
        return "answered with something other than HTTP"
    if isinstance(exc, http.client.IncompleteRead):
        return "transfer cut short"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


class _SpeedWatch:
    """Cuts the connection of a download whose data comes slower than LOW_SPEED bytes a second, over each
    LOW_SPEED_TIME seconds in turn (from the connection on). A thread, because http.client reads the headers, chunk
    sizes and trailers in loops of its own, where a mirror trickling them (each byte within TIMEOUT) would hold the
    download for days.

    It watches a duplicate of the connection's socket, taken before TLS, so that shutting it down ends any read of
    the connection, encrypted or not, and can never reach a file descriptor that was closed and reused since.
    """

    def __init__(self) -> None:
        self.received = 0  # bytes of the body so far, counted as they arrive by ``_copy``
        self.too_slow = False
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mnistkit-download-watch", daemon=True)

    def __enter__(self) -> _SpeedWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self._thread.join()
        self._forget()

    def watch(self, sock: socket.socket) -> socket.socket:
        """Watch ``sock``, a new connection (a redirect's), instead of the one before; returns it."""
        self._forget()
        with self._lock:
            self._socket = sock.dup()
        return sock

    def _forget(self) -> None:
        with self._lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None

    @property
    def reason(self) -> str:
        return f"too slow: under {LOW_SPEED:,} bytes/s for {LOW_SPEED_TIME:g} s"

    def _run(self) -> None:
        period = LOW_SPEED_TIME
        start, seen = time.monotonic(), 0
        while not self._done.wait(min(1.0, period / 10)):
            now = time.monotonic()
            if now - start < period:
                continue
            if self.received - seen < LOW_SPEED * (now - start):
                self._cut()
                return
            start, seen = now, self.received

    def _cut(self) -> None:
        with self._lock:
            self.too_slow = True
            if self._socket is not None:
                with suppress(OSError):  # closed meanwhile: nothing left to cut
                    self._socket.shutdown(socket.SHUT_RDWR)


def _lookup(host: str, port: int) -> list:
    """``socket.getaddrinfo`` for a TCP connection to ``host``, given at most TIMEOUT: urllib's timeout covers the
    connection and reads but not the lookup, which a broken resolver can hold for minutes.

    Nothing can cancel a lookup, so it runs in a daemon thread that is left to end (or not) on its own, without
    holding up the interpreter's exit; the wait for it is a lock's, which Ctrl-C ends.
    """
    answer: queue.SimpleQueue = queue.SimpleQueue()

    def look_up() -> None:
        try:
            answer.put(socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM))
        except Exception as exc:  # raised below, in the thread that asked
            answer.put(exc)

    threading.Thread(target=look_up, name="mnistkit-download-lookup", daemon=True).start()
    try:
        found = answer.get(timeout=TIMEOUT)
    except queue.Empty:
        raise socket.gaierror(f"looking up {host} took longer than {TIMEOUT:g} s") from None
    if isinstance(found, Exception):
        raise found
    return found


def _connect(address: tuple[str, int], timeout: float, source_address=None) -> socket.socket:
    """``socket.create_connection``, its name lookup done by ``_lookup``: each address found is tried in turn.

    http.client wraps the socket for TLS with the URL's host name, not the address, so https still checks the
    certificate against the name."""
    host, port = address
    error: OSError = OSError(f"no address found for {host}")
    for family, kind, proto, _, sockaddr in _lookup(host, port):
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        return sock
    raise error


def _watched_connect(watch: _SpeedWatch) -> Callable[..., socket.socket]:
    """What http.client connects with (``_connect``), each socket it makes handed to ``watch``."""
    return lambda *args, **kwargs: watch.watch(_connect(*args, **kwargs))


class _WatchedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection whose socket a ``_SpeedWatch`` watches."""

    def __init__(self, *args, watch: _SpeedWatch, **kwargs):
        super().__init__(*args, **kwargs)
        self._create_connection = _watched_connect(watch)


class _WatchedHTTPSConnection(http.client.HTTPSConnection):
    """An HTTPS connection whose socket a ``_SpeedWatch`` watches from before TLS: the handshake is watched too."""

    def __init__(self, *args, watch: _SpeedWatch, **kwargs):
        super().__init__(*args, **kwargs)
        self._create_connection = _watched_connect(watch)


class _WatchedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, watch: _SpeedWatch):
        super().__init__()
        self._watch = watch

    def http_open(self, req):
        return self.do_open(_WatchedHTTPConnection, req, watch=self._watch)


class _WatchedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, watch: _SpeedWatch):
        super().__init__()
        self._watch = watch

    def https_open(self, req):
        # No context: HTTPSConnection makes the default one, as urllib's own handler does.
        return self.do_open(_WatchedHTTPSConnection, req, watch=self._watch)


class _RedirectsAsErrors(urllib.request.HTTPRedirectHandler):
    """Hands a redirect back as an HTTPError, for ``_open`` to follow: urllib's own handler follows one to ftp:, and
    reads the redirect's whole page into memory first, however long."""

    def http_error_302(self, req, fp, code, msg, headers):
        return None

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


def _open(url: str, watch: _SpeedWatch):
    """The response for ``url``, after up to MAX_REDIRECTS redirects to http(s) URLs."""
    opener = urllib.request.build_opener(_RedirectsAsErrors, _WatchedHTTPHandler(watch), _WatchedHTTPSHandler(watch))
    visited = {url}
    for _ in range(MAX_REDIRECTS + 1):
        try:
            # identity: the .gz as it is, not gzipped again for the transfer (which no header would ask for)
            return opener.open(urllib.request.Request(url, headers={"Accept-Encoding": "identity"}), timeout=TIMEOUT)
        except urllib.error.HTTPError as exc:
            exc.close()  # unread: an error's or a redirect's page is not what was asked for
            if exc.code not in REDIRECT_CODES:
                raise _MirrorFailed(_why(exc)) from None
            url = _redirect_target(url, exc.headers.get("Location"), visited)
        except (OSError, ValueError, http.client.HTTPException) as exc:  # ValueError: a malformed URL
            raise _MirrorFailed(_why(exc), unreachable=True) from None
    raise _MirrorFailed(f"more than {MAX_REDIRECTS} redirects")


def _redirect_target(url: str, location: str | None, visited: set[str]) -> str:
    """Where a redirect from ``url`` to ``location`` leads, if it is to be followed; adds it to ``visited``.

    Only to http(s): a mirror must not make the download read a local file (file:) or reach into another
    protocol (ftp:), whatever its checksum would then say."""
    if not location:
        raise _MirrorFailed("a redirect without a Location")
    if len(location) > MAX_URL_LENGTH:
        raise _MirrorFailed(f"a redirect to a URL of {len(location):,} characters, more than {MAX_URL_LENGTH:,}")
    try:
        target = urllib.parse.urljoin(url, location)
        scheme = urllib.parse.urlsplit(target).scheme
    except ValueError:
        raise _MirrorFailed("a redirect to a malformed URL") from None
    if scheme not in ("http", "https"):
        shown = f"{scheme}:" if 0 < len(scheme) <= 20 else "a URL of no known scheme"
        raise _MirrorFailed(f"refused a redirect to {shown} (only http and https are followed)")
    if target in visited:
        raise _MirrorFailed("a redirect loop")
    visited.add(target)
    return target


def _content_length(response) -> int | None:
    """How long the body is, as http.client reads it, so before any of it is read: None for a chunked body (whose
    Content-Length, if any, is ignored) or a Content-Length that is no length (negative, not a number)."""
    if isinstance(response, http.client.HTTPResponse):
        return response.length
    try:  # a file: or ftp: mirror, named by the user
        length = int(response.headers["Content-Length"])
    except (TypeError, ValueError):
        return None
    return length if length >= 0 else None


def _chunks(response) -> Iterator[bytes]:
    """The body as it arrives: each chunk is what one read of the socket gave (``read1``), so that the bytes are
    counted as they come, not once 64 KiB have."""
    # Only network errors become _MirrorFailed; a failed write to disk must stop the download, not try a mirror.
    while True:
        try:
            chunk = response.read1(CHUNK)
        except TimeoutError:
            raise _MirrorFailed(f"stalled: nothing received for {TIMEOUT:g} s", unreachable=True) from None
        except http.client.IncompleteRead:
            raise _MirrorFailed("a chunked transfer cut short or malformed") from None
        except (OSError, http.client.HTTPException) as exc:
            raise _MirrorFailed(_why(exc)) from None
        if not chunk:
            return
        yield chunk


def _copy(response, dest: Path, filename: str, progress: BytesCallback | None, watch: _SpeedWatch) -> None:
    # No data file is larger than this (``idx.MAX_FILE_BYTES``): a mirror sending more, or without end, is wrong,
    # and must not fill the disk before its checksum says so.
    limit = idx.MAX_FILE_BYTES
    total = _content_length(response)
    if total is not None and total > limit:
        raise _MirrorFailed(f"a file of {total:,} bytes, more than the {limit:,} a data file may hold")
    done = 0
    with open(dest, "wb") as out:
        for chunk in _chunks(response):
            out.write(chunk)
            done += len(chunk)
            watch.received = done
            if done > limit:
                raise _MirrorFailed(f"sent more than the {limit:,} bytes a data file may hold")
            if progress is not None:
                progress(filename, done, total)
    # http.client ends a body cut short by the server silently, so the length has to be checked here.
    if total is not None and done != total:
        raise _MirrorFailed(f"transfer cut short ({done} of {total} bytes)")


def _check(path: Path, filename: str, spec: DatasetSpec, response) -> None:
    """Raise _MirrorFailed, saying why, unless ``path`` now holds the catalog's ``filename``."""
    if _verifies(path, filename, spec):
        return
    if _gzip_encoded(response) and _undo_gzip_encoding(path) and _verifies(path, filename, spec):
        return
    raise _MirrorFailed(_mismatch(path, filename, spec, response))


def _gzip_encoded(response) -> bool:
    return (response.headers.get("Content-Encoding") or "").strip().lower() in ("gzip", "x-gzip")


def _undo_gzip_encoding(path: Path) -> bool:
    """Gunzip ``path`` in place: a server that gzips the .gz again for the transfer (though asked not to) says so in
    Content-Encoding, and one that only labels the .gz so sent it as it is, which verified. False if ``path`` is no
    gzip stream, or a broken one, or inflates past the limit of a data file."""
    raw = fileio.read_regular(path, idx.MAX_FILE_BYTES)
    if raw[:2] != GZIP_MAGIC:
        return False
    try:
        with open(path, "wb") as out:
            for chunk in _inflated(raw, idx.MAX_FILE_BYTES):
                out.write(chunk)
    except (gzip.BadGzipFile, EOFError, zlib.error, ValueError):  # not OSError: a full disk must stop the download
        return False
    return True


def _mismatch(path: Path, filename: str, spec: DatasetSpec, response) -> str:
    """Why a downloaded file failed its checksum, in a few words. A web page where the file should be is most often
    a network's login page (a captive portal, answering every address with 200), which the user can do something
    about; a checksum mismatch alone would send them looking for a corrupt mirror.

    So is a file cut short where its length said it was whole: a proxy's Content-Length shorter than the file, or a
    body without one ended by a dropped connection. The catalog has no sizes of the .gz files, but a gzip stream
    says where it ends."""
    raw = fileio.read_regular(path, idx.MAX_FILE_BYTES)
    head = raw[:512]
    content_type = (response.headers.get("Content-Type") or "").partition(";")[0].strip().lower()
    markup = content_type in ("text/html", "application/xhtml+xml") or head.lstrip().startswith(b"<")
    if markup and not head.startswith(GZIP_MAGIC):  # a data file, whatever its label says
        return "sent a web page, not the data file (a network login page?)"
    if _ends_early(raw, _inflate_limit(filename, spec)):
        return (
            f"sent only the first {len(raw):,} bytes of the file, its gzip stream broken off "
            "(its Content-Length was wrong or the connection was cut)"
        )
    return "checksum mismatch"


def _download(url: str, folder: Path, filename: str, spec: DatasetSpec, progress: BytesCallback | None) -> None:
    """Fetch ``url`` into ``folder / filename``, which only ever receives a complete, verified file."""
    with _SpeedWatch() as watch:
        try:
            response = _open(url, watch)
            with response, atomic_path(folder / filename) as tmp:
                _copy(response, tmp, filename, progress, watch)
                _check(tmp, filename, spec, response)
        except _MirrorFailed:
            if watch.too_slow:  # the cut itself shows as a closed connection or a short body: say why it was cut
                raise _MirrorFailed(watch.reason, unreachable=True) from None
            raise
        except WriteError as exc:  # no mirror can help: the cache is full or not writable
            cause = exc.__cause__
            if not isinstance(cause, OSError):
                raise
            raise WriteError(
                f"cannot write {folder / filename}: {cause.strerror or cause}; {_cache_advice(cause)}"
            ) from exc


def _cache_advice(exc: OSError) -> str:
    """What to do when the cache cannot be written."""
    if exc.errno in FULL_DISK:
        return "free some space, or set MNISTKIT_DATA to a folder on a disk with room"
    return "set MNISTKIT_DATA to a folder you can write to"


def _fetch(
    spec: DatasetSpec,
    filename: str,
    folder: Path,
    mirrors: list[str],
    failures: dict[str, _MirrorFailed],
    progress: BytesCallback | None,
) -> bool:
    """Try each mirror in turn for one file; record in ``failures`` why each one failed."""
    for base in mirrors:
        if base in failures and failures[base].unreachable:
            continue
        try:
            _download(base.rstrip("/") + "/" + filename, folder, filename, spec, progress)
            return True
        except _MirrorFailed as exc:
            failures[base] = exc
    return False


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create {folder}: {exc.strerror or exc}; {_cache_advice(exc)}") from None


def _shown(reason: str, limit: int = 200) -> str:
    """A reason as one short, printable line: some come from the server's own words."""
    text = "".join(c if c.isprintable() else "?" for c in " ".join(reason.split()))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _failure_message(spec: DatasetSpec, folder: Path, missing: list[str], failures: dict[str, _MirrorFailed]) -> str:
    reasons = "; ".join(f"{base}: {_shown(exc.reason)}" for base, exc in failures.items()) or "no mirrors"
    return (
        f"download failed for {spec.name} ({missing[0]}: {reasons}); with no network, copy {', '.join(missing)} "
        f"into {folder} (or set MNISTKIT_MIRRORS to a mirror you can reach)"
    )


def ensure_dataset(
    dataset: str | DatasetSpec,
    cache: str | os.PathLike | None = None,
    mirrors: list[str] | None = None,
    progress: BytesCallback | None = None,
) -> Path:
    """The folder holding ``dataset``'s four verified IDX files, downloading those missing or corrupt.

    ``cache`` replaces ``cache_dir()``; ``mirrors`` replaces ``mirror_urls(dataset)`` (so ``$MNISTKIT_MIRRORS``
    too); ``progress(file name, bytes done, total bytes or None)`` is called as data arrives.
    """
    spec = _resolve(dataset)
    folder = dataset_dir(spec, cache)
    missing = [f for f in spec.files if not _verifies(folder / f, f, spec)]
    if not missing:
        return folder
    _make_folder(folder)
    urls = mirror_urls(spec) if mirrors is None else list(mirrors)
    failures: dict[str, _MirrorFailed] = {}
    for i, filename in enumerate(missing):
        if not _fetch(spec, filename, folder, urls, failures, progress):
            raise DownloadError(_failure_message(spec, folder, missing[i:], failures))
    return folder


# --------------------------------------------------------------------------------------------------
# Reports


def _file_report(path: Path, filename: str, spec: DatasetSpec) -> dict:
    present = path.is_file()
    return {
        "present": present,
        "size": path.stat().st_size if present else None,
        "verified": present and _verifies(path, filename, spec),
    }


def _status(files: dict[str, dict], bundled: bool) -> str:
    """A short summary for ``mnistkit data list``: what the cache holds, and whether a bundled copy exists."""
    total = len(files)
    verified = sum(f["verified"] for f in files.values())
    corrupt = sum(f["present"] and not f["verified"] for f in files.values())
    if verified == total:
        cached = "downloaded"
    elif corrupt:
        cached = f"{corrupt} of {total} files corrupt"
    elif verified:
        cached = f"{verified} of {total} files"
    else:
        cached = "not downloaded"
    if not bundled:
        return cached
    return "bundled" if cached == "not downloaded" else f"bundled, {cached}"


def dataset_info(dataset: str | DatasetSpec, cache: str | os.PathLike | None = None) -> dict:
    """Everything ``mnistkit data info`` shows: the catalog entry, the cache folder, and each file's state."""
    spec = _resolve(dataset)
    folder = dataset_dir(spec, cache)
    files = {f: _file_report(folder / f, f, spec) for f in spec.files}
    bundled = spec.name == "mnist" and _bundled_mnist_verifies()
    info = {
        "name": spec.name,
        "description": spec.description,
        "folder": str(folder),
        "status": _status(files, bundled),
        "files": files,
        "mirrors": mirror_urls(spec),
        "classes": list(spec.classes),
        "citation": spec.citation,
    }
    if spec.name == "mnist":
        info["bundled"] = {
            "folder": str(BUNDLED_DIR),
            "verified": bundled,
            "files": {f: _file_report(BUNDLED_DIR / f, f, spec) for f in spec.files},
        }
    return info


def format_dataset_info(info: dict) -> str:
    """``dataset_info``'s report as text: where the files are, their sizes, and whether their checksums verify."""

    def file_lines(files: dict[str, dict]) -> list[str]:
        width = max(map(len, files))
        return [
            f"  {name:<{width}}  {f['size']:>10,} bytes  {'verified' if f['verified'] else 'CHECKSUM MISMATCH'}"
            if f["present"]
            else f"  {name:<{width}}  missing"
            for name, f in files.items()
        ]

    lines = [f"{info['name']}: {info['description']}", f"status: {info['status']}"]
    if "bundled" in info:
        lines += [f"bundled copy in {info['bundled']['folder']}:", *file_lines(info["bundled"]["files"])]
    lines += [f"download cache {info['folder']}:", *file_lines(info["files"])]
    lines += [
        f"mirrors: {', '.join(info['mirrors'])}",
        f"classes: {', '.join(info['classes'])}",
        f"citation: {info['citation']}",
    ]
    return "\n".join(lines)


def list_datasets(cache: str | os.PathLike | None = None) -> list[dict]:
    """``dataset_info`` for every catalog entry, in catalog order."""
    return [dataset_info(spec, cache) for spec in CATALOG.values()]
