"""The HTTP service of the async contenders, and a lean keep-alive client for it.

The service answers ``GET /tier/<key>`` with a small JSON body,
``{"key": "<key>", "tier": "<tier>"}``, after a fixed latency (5 ms by
default): a stand-in for a customer service that ``eos_sync`` and ``eos_async``
call once per record. It runs in its own process (:class:`HttpService` starts
``python _http.py serve``), so it never shares an event loop, or the GIL, with
the contender it serves.

Both ends are lean but real HTTP/1.1 over TCP: one request per connection at a
time (no pipelining), keep-alive, ``Content-Length`` bodies, ``Connection:
close`` honoured, built on ``asyncio.BufferedProtocol``; the latency is a
``loop.call_later`` per request, so the service holds any number of requests
at once. aiohttp's client and server together reach only ~7,000 requests/s at
200 concurrent requests on the benchmark machine (2 cores), far below the
40,000/s the async contender is meant to reach: with it the benchmark would
measure aiohttp, not eos. The service uses uvloop when it is installed (optional;
``pip install uvloop``): it lowers the service's CPU, which the contender shares
the machine with. The client (:class:`HttpClient`) runs on the caller's running
loop: eos's processing loop in ``eos_async``.

``python benchmarks/_http.py bench --concurrency 200`` measures the bare stack:
this client, with that many requests at once, against the service.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Sequence
from types import TracebackType
from typing import Any, cast

LATENCY_MS = 5.0
TIERS = (b"bronze", b"silver", b"gold", b"platinum")
PATH_PREFIX = "/tier/"


def tier_of(key: bytes) -> bytes:
    """The tier the service answers for ``key`` (deterministic, so outputs can be checked)."""
    return TIERS[zlib.crc32(key) % len(TIERS)]


def answer(key: bytes) -> bytes:
    """The service's JSON answer for ``key``."""
    return b'{"key":"%s","tier":"%s"}' % (key, tier_of(key))


# -- the service ---------------------------------------------------------------


class _Buffered(asyncio.BufferedProtocol):
    """Reads into one preallocated buffer (``recv_into``): nothing is allocated per read.

    (``asyncio.Protocol`` receives every read as a new bytes object of the
    loop's maximum read size, 256 KiB: an ``mmap``, ``mremap`` and ``munmap``
    per read, which cost more than the rest of a request.) Subclasses consume
    complete messages in :meth:`_consume`.
    """

    SIZE = 65536
    """The largest message (head and body) either end handles."""

    def __init__(self) -> None:
        self._data = bytearray(self.SIZE)
        self._view = memoryview(self._data)
        self._filled = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view[self._filled :]

    def buffer_updated(self, nbytes: int) -> None:
        filled = self._filled + nbytes
        consumed = self._consume(self._data, filled)
        rest = filled - consumed
        if consumed and rest:
            self._data[:rest] = self._data[consumed:filled]
        self._filled = rest
        if rest == len(self._data):
            self._too_large()

    def _consume(self, data: bytearray, filled: int) -> int:
        """Handle the complete messages in ``data[:filled]``; return the bytes they took."""
        raise NotImplementedError

    def _too_large(self) -> None:
        if self.transport is not None:
            self.transport.close()


class _ServerConnection(_Buffered):
    """One client connection: parses requests, answers each after the latency, in order."""

    def __init__(self, latency_s: float, served: list[int]) -> None:
        super().__init__()
        self._latency_s = latency_s
        self._served = served
        self._pending: collections.deque[tuple[bytes, bool]] = collections.deque()
        self._loop = asyncio.get_running_loop()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def _consume(self, data: bytearray, filled: int) -> int:
        start = 0
        while True:
            end = data.find(b"\r\n\r\n", start, filled)
            if end < 0:
                return start
            head = bytes(data[start:end]).split(b"\r\n")
            length = 0
            close = False
            for line in head[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection":
                    close = value.strip().lower() == b"close"
            body_end = end + 4 + length
            if filled < body_end:
                return start
            parts = head[0].split(b" ")
            target = parts[1] if len(parts) == 3 else b""
            if parts[0] != b"GET" or not target.startswith(PATH_PREFIX.encode()):
                response = (
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
                self._pending.append((response, True))
            else:
                body = answer(target[len(PATH_PREFIX) :])
                response = (
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n%s\r\n%s"
                    % (len(body), b"Connection: close\r\n" if close else b"", body)
                )
                self._pending.append((response, close))
            # Every request waits the same latency: the timers fire in arrival order.
            self._loop.call_later(self._latency_s, self._respond)
            start = body_end

    def _respond(self) -> None:
        response, close = self._pending.popleft()
        transport = self.transport
        if transport is None:
            return
        transport.write(response)
        self._served[0] += 1
        if close:
            transport.close()


async def _serve(host: str, port: int, latency_s: float) -> None:
    loop = asyncio.get_running_loop()
    served = [0]
    server = await loop.create_server(
        lambda: _ServerConnection(latency_s, served), host, port, backlog=1024
    )
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    sockname = server.sockets[0].getsockname()
    print(json.dumps({"port": sockname[1], "loop": _loop_name()}), flush=True)
    await stop.wait()
    server.close()
    print(json.dumps({"served": served[0]}), flush=True)


def _loop_name() -> str:
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


def run_loop(main: Any, use_uvloop: bool) -> Any:
    """``asyncio.run(main)``, on uvloop when asked for and installed."""
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(main)
    return asyncio.run(main)


class HttpService:
    """The service in a child process (``start``/``stop``, or a ``with`` block).

    ``uvloop``: run the service on uvloop when it is installed (the default).
    ``served``: the number of responses it sent, known after the block.
    """

    def __init__(self, latency_ms: float = LATENCY_MS, *, uvloop: bool = True) -> None:
        self.latency_ms = latency_ms
        self.uvloop = uvloop
        self.host = "127.0.0.1"
        self.port = 0
        self.loop = ""
        self.served: int | None = None
        self._proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> HttpService:
        """Start the service's process; return when it listens."""
        argv = [sys.executable, os.path.abspath(__file__), "serve",
                "--latency-ms", str(self.latency_ms), "--host", self.host]  # fmt: skip
        if not self.uvloop:
            argv.append("--no-uvloop")
        self._proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            self._proc.wait(10)
            raise RuntimeError(f"the HTTP service did not start (exit {self._proc.returncode})")
        started = json.loads(line)
        self.port, self.loop = int(started["port"]), str(started["loop"])
        return self

    def stop(self) -> None:
        """Stop the service's process; ``served`` then holds its count of responses."""
        proc = self._proc
        if proc is None:
            return
        self._proc = None
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=30)
            lines = out.strip().splitlines()
            if lines:
                self.served = int(json.loads(lines[-1])["served"])
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> HttpService:
        return self.start()

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _exc: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        self.stop()


# -- the client ----------------------------------------------------------------


class HttpError(Exception):
    """A response other than 200, or a connection that failed or closed mid-request."""


class _ClientConnection(_Buffered):
    """One keep-alive connection: one request at a time, its response to ``waiter``."""

    def __init__(self) -> None:
        super().__init__()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.reusable = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.reusable = False
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(HttpError(f"connection lost: {exc or 'closed by the server'}"))

    def _consume(self, data: bytearray, filled: int) -> int:
        end = data.find(b"\r\n\r\n", 0, filled)
        if end < 0:
            return 0
        head = bytes(data[:end]).lower()  # header names are case-insensitive
        at = head.find(b"\r\ncontent-length:")
        if at < 0:  # chunked or read-to-close bodies: not this service's
            self._fail(HttpError(f"no Content-Length in {head!r}"))
            return filled
        stop = head.find(b"\r\n", at + 17)
        length = int(head[at + 17 : stop if stop >= 0 else end])
        body_end = end + 4 + length
        if filled < body_end:
            return 0
        if b"\r\nconnection: close" in head:
            self.reusable = False
        waiter = self.waiter
        self.waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_result((int(head[9:12]), bytes(data[end + 4 : body_end])))  # HTTP/1.1 200
        return body_end

    def _too_large(self) -> None:
        self._fail(HttpError(f"a response over {self.SIZE} bytes"))

    def _fail(self, exc: Exception) -> None:
        self.reusable = False
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.close()


class HttpClient:
    """``await client.get(path)`` on the running loop, over keep-alive connections.

    At most ``connections`` connections, opened on demand and reused; a request
    that finds none idle waits for one. Create it on the loop that uses it
    (eos's processing loop: in ``AsyncProcessor.setup``), close it there.
    """

    def __init__(self, url: str, *, connections: int = 100) -> None:
        host_port = url.removeprefix("http://").rstrip("/")
        self._host, _, port = host_port.partition(":")
        self._port = int(port or 80)
        self._request_head = b"Host: %s\r\n\r\n" % host_port.encode()
        self._limit = connections
        self._closed = False
        self._open = 0
        self._idle: list[_ClientConnection] = []
        self._waiters: collections.deque[asyncio.Future[_ClientConnection | None]] = (
            collections.deque()
        )
        self._loop = asyncio.get_running_loop()

    async def _acquire(self) -> _ClientConnection:
        while self._idle:
            conn = self._idle.pop()
            if conn.reusable:
                return conn
            self._open -= 1
        if self._open < self._limit:
            self._open += 1
            try:
                _, conn = await self._loop.create_connection(
                    _ClientConnection, self._host, self._port
                )
            except BaseException:
                self._open -= 1
                raise
            return conn
        waiter: asyncio.Future[_ClientConnection | None] = self._loop.create_future()
        self._waiters.append(waiter)
        got = await waiter
        return got if got is not None else await self._acquire()

    def _release(self, conn: _ClientConnection) -> None:
        if not conn.reusable or self._closed:
            self._open -= 1
            if conn.transport is not None:
                conn.transport.close()
            conn = None  # type: ignore[assignment]
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)  # None: a slot is free, open a connection
                return
        if conn is not None:
            self._idle.append(conn)

    async def get(self, path: str) -> bytes:
        """GET ``path``; the response body. Raises HttpError unless the status is 200."""
        idle = self._idle
        conn = idle.pop() if idle and idle[-1].reusable else await self._acquire()
        try:
            waiter: asyncio.Future[tuple[int, bytes]] = self._loop.create_future()
            conn.waiter = waiter
            if conn.transport is None:
                raise HttpError("connection closed by the server")
            conn.transport.write(b"GET %s HTTP/1.1\r\n%s" % (path.encode(), self._request_head))
            status, body = await waiter
        except BaseException:
            conn.reusable = False  # a response may still come: never reuse it
            raise
        finally:
            conn.waiter = None
            self._release(conn)
        if status != 200:
            raise HttpError(f"GET {path}: HTTP {status}")
        return body

    async def close(self) -> None:
        """Close every idle connection (the ones in use close when released)."""
        self._closed = True
        self._limit = 0
        for conn in self._idle:
            if conn.transport is not None:
                conn.transport.close()
        self._idle.clear()


# -- the bare stack ------------------------------------------------------------


async def bench_client(url: str, concurrency: int, seconds: float) -> float:
    """Requests/s of :class:`HttpClient` with ``concurrency`` requests always in flight."""
    client = HttpClient(url, connections=concurrency)
    await client.get(PATH_PREFIX + "warm-up")
    done = 0
    deadline = time.monotonic() + seconds

    async def worker(n: int) -> None:
        nonlocal done
        path = f"{PATH_PREFIX}k-{n:05d}"
        while time.monotonic() < deadline:
            await client.get(path)
            done += 1

    started = time.monotonic()
    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    elapsed = time.monotonic() - started
    await client.close()
    return done / elapsed


def bench(
    concurrencies: Sequence[int],
    *,
    seconds: float = 3.0,
    latency_ms: float = LATENCY_MS,
    server_uvloop: bool = True,
    client_uvloop: bool = False,
) -> tuple[dict[int, float], str]:
    """Requests/s of the bare stack per concurrency; and which loop served them."""
    out: dict[int, float] = {}
    with HttpService(latency_ms, uvloop=server_uvloop) as service:
        for concurrency in concurrencies:
            rate = run_loop(bench_client(service.url, concurrency, seconds), client_uvloop)
            out[concurrency] = rate
    return out, service.loop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the service; print its port as JSON")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=0)
    serve.add_argument("--latency-ms", type=float, default=LATENCY_MS)
    serve.add_argument("--no-uvloop", action="store_true", help="plain asyncio")
    measure = sub.add_parser("bench", help="requests/s of this client against the service")
    measure.add_argument("--concurrency", default="1,10,50,100,200,400")
    measure.add_argument("--seconds", type=float, default=3.0)
    measure.add_argument("--latency-ms", type=float, default=LATENCY_MS)
    measure.add_argument("--no-uvloop", action="store_true", help="service on plain asyncio")
    measure.add_argument("--client-uvloop", action="store_true", help="client on uvloop")
    args = parser.parse_args(argv)
    if args.command == "serve":
        with contextlib.suppress(KeyboardInterrupt):
            run_loop(_serve(args.host, args.port, args.latency_ms / 1000), not args.no_uvloop)
        return 0
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    rates, loop = bench(
        concurrencies,
        seconds=args.seconds,
        latency_ms=args.latency_ms,
        server_uvloop=not args.no_uvloop,
        client_uvloop=args.client_uvloop,
    )
    for concurrency, rate in rates.items():
        ideal = concurrency / (args.latency_ms / 1000)
        print(
            f"concurrency {concurrency}: {rate:,.0f} requests/s ({rate / ideal:.0%} of the "
            f"ideal {ideal:,.0f}/s; service on {loop})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
