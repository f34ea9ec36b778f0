"""What protects `mnistkit serve` from hostile clients and pages, below the API itself.

``guard(app, allowed_hosts)`` wraps the whole ASGI app (its error pages included) in, outermost first:

- ``SecurityHeaders``: every response says ``nosniff``, may not be framed, sends no referrer, and carries a
  Content-Security-Policy that lets a page run only this server's own scripts and reach only this server.
- ``AllowedHosts``: a request whose Host header is a name this server was not told about gets 400. A page on
  another site that re-points its own name at this machine (DNS rebinding) sends its own name, so it cannot
  read the API. Localhost names and IP addresses are always allowed: neither can be rebound.
- ``HeadAsGet``: HEAD works wherever GET does, with the GET response's headers and no body.

``RequestDeadlines`` is uvicorn's HTTP/1.1 protocol with deadlines for receiving each request (uvicorn has only
an idle timeout between requests, which every byte received resets): a client that trickles its headers or body
(slowloris) is answered 408 and disconnected instead of holding its socket for ever.

``RateLimit`` counts a client's requests to an endpoint that stores what it is sent (``POST /api/feedback``), so
that one client cannot fill the corrections database with junk or crowd out everyone else's.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ipaddress
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

import h11
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from .errors import ConfigError, short

HEADER_TIMEOUT = 10.0  # seconds from a connection's opening (or its last response) to a request's last header
BODY_TIMEOUT = 60.0  # seconds from the headers to the end of the body: a 4 MiB upload needs 70 KB/s

# The policy every response carries: this server's own scripts, styles, images and API only; no plugins, no
# <base> rewriting, forms post only here, and no other site may frame a page (clickjacking).
POLICY = "default-src 'self'; base-uri 'none'; object-src 'none'; form-action 'self'; frame-ancestors 'none'"
# The API docs (Swagger UI, ReDoc) start from an inline script, allowed by its hash, inject <style> elements and
# use data: images and a blob: worker.
DOCS_POLICY = POLICY + "; style-src 'self' 'unsafe-inline'; img-src 'self' data:; worker-src 'self' blob:"
DOCS_PATHS = ("/docs", "/redoc")
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),  # frame-ancestors for browsers that predate CSP 2
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)
HOST_NAME = re.compile(r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*")


def guard(app: ASGIApp, allowed_hosts: str | Iterable[str] = ()) -> ASGIApp:
    """``app`` behind every guard above; ``allowed_hosts``: host names to answer besides localhost and IPs."""
    return SecurityHeaders(AllowedHosts(HeadAsGet(app), allowed_hosts))


class SecurityHeaders:
    """ASGI middleware: the security headers and Content-Security-Policy on every HTTP response."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["path"] in DOCS_PATHS:
            return await self.app(scope, receive, self._docs_sender(send))

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = _with_headers(message, POLICY.encode())
            await send(message)

        await self.app(scope, receive, with_headers)

    @staticmethod
    def _docs_sender(send: Send) -> Send:
        """A ``send`` that holds a docs page (a few KB of HTML) until its end, to allow its inline scripts by hash."""
        start: Message = {}
        body = bytearray()

        async def sender(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            if message["type"] != "http.response.body" or not start:
                return await send(message)
            body.extend(message.get("body", b""))
            if message.get("more_body", False):
                return
            sources = ["'self'", *(f"'sha256-{_sha256(script)}'" for script in INLINE_SCRIPT.findall(bytes(body)))]
            await send(_with_headers(start, f"{DOCS_POLICY}; script-src {' '.join(sources)}".encode()))
            await send({"type": "http.response.body", "body": bytes(body)})

        return sender


def _sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def _with_headers(start: Message, policy: bytes) -> Message:
    headers = [(name, value) for name, value in start.get("headers", []) if name.lower() != b"content-security-policy"]
    return {**start, "headers": [*headers, *SECURITY_HEADERS, (b"content-security-policy", policy)]}


class AllowedHosts:
    """ASGI middleware: 400 for a Host header naming neither localhost, an IP address, nor an allowed name.

    (Starlette's TrustedHostMiddleware answers in plain text and cannot tell IP addresses from names.)
    """

    def __init__(self, app: ASGIApp, names: str | Iterable[str] = ()):
        self.app = app
        self.names = set(allowed_host_names(names))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            host = dict(scope["headers"]).get(b"host")
            if host is not None and not self.allows(host_name(host.decode("latin-1"))):
                shown = host.decode("latin-1")[:100]
                error = (
                    f"host {shown!r} is not allowed: this server answers to localhost, IP addresses and the names "
                    "it was started with (mnistkit serve --allow-host NAME), which guards it against DNS rebinding"
                )
                return await JSONResponse({"error": error}, status_code=400)(scope, receive, send)
        await self.app(scope, receive, send)

    def allows(self, name: str) -> bool:
        return name in self.names or name == "localhost" or name.endswith(".localhost") or _is_ip(name)


def host_name(host: str) -> str:
    """The name in a Host header: lower case, without the port, the brackets around an IPv6 address, a final dot."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0].rstrip(".") if host.count(":") == 1 else host.rstrip(".")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def allowed_host_names(names: str | Iterable[str]) -> list[str]:
    """``names`` checked and normalised as allowed hosts (``allowed_host``); a single str is one name, not letters."""
    if isinstance(names, str):
        return [allowed_host(names)]
    # bytes would iterate as numbers, and anything else not iterable has no names to read
    if isinstance(names, (bytes, bytearray)) or not isinstance(names, Iterable):
        raise ConfigError(f"allowed_hosts must be a host name or a list of host names, got {short(names)}")
    return [allowed_host(name) for name in names]


def allowed_host(name: str) -> str:
    """``name`` checked and normalised as an allowed host: a DNS name or an IP address, nothing more."""
    if not isinstance(name, str):
        raise ConfigError(f"allowed host {short(name)} is not a host name: give each as a str, such as 'example.com'")
    normal = name.strip().lower().rstrip(".")
    if normal.startswith("[") and normal.endswith("]"):
        normal = normal[1:-1]
    if not (_is_ip(normal) or HOST_NAME.fullmatch(normal)):
        raise ConfigError(
            f"allowed host {name!r} is not a host name: give a name such as example.com or an IP address, "
            "with no scheme, port or path"
        )
    return normal


class HeadAsGet:
    """ASGI middleware: answer HEAD as GET, sending the headers only (FastAPI routes answer GET alone)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            return await self.app(scope, receive, send)

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)


LINGER_SECONDS = 2.0


class RequestDeadlines(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with deadlines: a request's headers must arrive within ``header_timeout`` seconds
    of the connection opening (or of the previous response), and its body within ``body_timeout`` of them.
    A late request is answered 408 (unless its response has begun) and its connection closed. The state it follows
    is h11's (``their_state``): IDLE until a request's head is in, SEND_BODY until its body is."""

    def __init__(
        self, *args, header_timeout: float = HEADER_TIMEOUT, body_timeout: float = BODY_TIMEOUT, **kwargs
    ) -> None:
        super().__init__(*args, **kwargs)
        self.timeouts = {"headers": header_timeout, "body": body_timeout}
        self.awaiting: str | None = None  # the part of a request being waited for: "headers", "body" or None
        self.deadline: asyncio.TimerHandle | None = None
        self.lingering = False  # answered 408 and half-closed: what the client still sends is dropped

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._follow()

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            return
        super().data_received(data)
        self._follow()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow()

    def connection_lost(self, exc: Exception | None) -> None:
        self._wait_for(None)
        super().connection_lost(exc)

    def _follow(self) -> None:
        """Start the deadline of the part of a request now awaited, if it changed."""
        if self.transport.is_closing():
            return self._wait_for(None)
        state = self.conn.their_state
        self._wait_for("headers" if state is h11.IDLE else "body" if state is h11.SEND_BODY else None)

    def _wait_for(self, part: str | None) -> None:
        if part == self.awaiting:
            return
        if self.deadline is not None:
            self.deadline.cancel()
        self.awaiting = part
        self.deadline = None if part is None else self.loop.call_later(self.timeouts[part], self._expired)

    def _expired(self) -> None:
        part = self.awaiting or "headers"
        seconds = self.timeouts[part]
        self.deadline = self.awaiting = None
        if self.transport.is_closing():
            return
        who = f"{self.client[0]}:{self.client[1]} - " if self.client else ""
        self.logger.warning("%srequest %s not received within %g s: connection closed", who, part, seconds)
        answered = part == "body" and self.cycle is not None and self.cycle.response_started
        if not answered:
            body = b'{"error":"request %s not received within %g s: send the whole request without pausing"}' % (
                part.encode(),
                seconds,
            )
            head = [b"HTTP/1.1 408 Request Timeout", b"content-type: application/json", b"connection: close"]
            head += [name + b": " + value for name, value in SECURITY_HEADERS]
            head += [b"content-security-policy: " + POLICY.encode()]
            head += [b"content-length: %d" % len(body)]
            self.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        # A lingering close: closing at once while the client is still sending makes the kernel answer its next
        # bytes with a reset, which can discard the 408 before the client reads it. Half-close (FIN after the
        # answer) and drop what still arrives for a moment, then close.
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.lingering = True
            self.loop.call_later(LINGER_SECONDS, self.transport.close)
        else:
            self.transport.close()


# A person correcting digits by hand sends one every few seconds at most (draw, read the answer, press a button):
# 30 at once covers a quick run of them, and one every 2 s after that is still faster than anyone draws. A script
# is held to 43,200 corrections a day: some 18 hours to fill the 1 GiB database with the largest a correction may
# be (33 KiB), days with the page's usual few KiB.
DEFAULT_FEEDBACK_RATE = "30/min"
RATE_TEXT = re.compile(r"(\d+)\s*/\s*(s|min|h)")
PERIOD_SECONDS = {"s": 1.0, "min": 60.0, "h": 3600.0}
PERIOD_NAMES = {"s": "a second", "min": "a minute", "h": "an hour"}
# Clients whose buckets are kept, a few hundred bytes each; past it the least recently seen is forgotten.
MAX_CLIENTS = 10_000
# Of a client that is no IP address: uvicorn takes X-Forwarded-For from a proxy it trusts as sent, of any length.
CLIENT_CHARS = 64


class RateLimit:
    """Token buckets, one per client: a client may send ``count`` requests at once, then ``count`` a ``period``
    (``"s"``, ``"min"`` or ``"h"``), one each time its bucket refills by one. ``clock``: the time in seconds.

    A bucket is kept as the time it will be full again (the generic cell rate algorithm), in the order its client
    was last seen. A full bucket is the same as none: those at the front are dropped as they fill, and so the table
    holds the clients seen within about a ``period``. It never holds more than ``max_clients``: past that, the least
    recently seen client is forgotten (and starts afresh), so that a flood from many addresses costs bounded memory.
    Used from the event loop only: no lock.
    """

    def __init__(
        self,
        count: int,
        period: str,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = MAX_CLIENTS,
    ):
        self.count = count
        self.period = period
        self.interval = PERIOD_SECONDS[period] / count  # seconds for one request's worth to refill
        self.clock = clock
        self.max_clients = max_clients
        self.full_at: OrderedDict[str, float] = OrderedDict()

    def __str__(self) -> str:
        return f"{self.count} {PERIOD_NAMES[self.period]}"

    def take(self, client: str) -> float:
        """Count a request of ``client``: 0 if its bucket had room for it, else the seconds until it has (the request
        is then not counted)."""
        now = self.clock()
        while self.full_at and next(iter(self.full_at.values())) <= now:
            self.full_at.popitem(last=False)
        full_at = max(self.full_at.get(client, now), now)
        self.full_at[client] = full_at
        self.full_at.move_to_end(client)
        wait = full_at - now - (self.count - 1) * self.interval
        if wait > 0:
            return wait
        self.full_at[client] = full_at + self.interval
        if len(self.full_at) > self.max_clients:
            self.full_at.popitem(last=False)
        return 0.0


def rate_limit(rate: str | RateLimit | None) -> RateLimit | None:
    """``rate`` as a RateLimit: ``"N/s"``, ``"N/min"`` or ``"N/h"``; None, ``"0"`` or ``"off"`` for no limit (None).
    A RateLimit is taken as it is."""
    if rate is None or isinstance(rate, RateLimit):
        return rate
    if isinstance(rate, str):
        text = rate.strip().lower()
        if text in ("0", "off"):
            return None
        found = RATE_TEXT.fullmatch(text)
        if found and int(found[1]) > 0:
            return RateLimit(int(found[1]), found[2])
    raise ConfigError(
        f"feedback_rate {short(rate)} is not a rate: give how many corrections one address may send a second, minute "
        "or hour, such as 30/min (the default), 5/s or 600/h; 0 or off for no limit",
        options=("feedback_rate",),
    )


def client_address(client: tuple[str, int] | None) -> str:
    """What a client is counted as: the IP address of the socket's peer (or the one uvicorn took from
    X-Forwarded-For, which it does only for a proxy it trusts: by default, one on this machine). An IPv6 client is
    its /64 network, which a single subscriber is given whole: counted by address, one machine would be billions."""
    if client is None:
        return "an unknown address"
    try:
        address = ipaddress.ip_address(client[0])
    except ValueError:
        return client[0][:CLIENT_CHARS]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(address) >> 64 << 64, 64)))
    return str(address)
