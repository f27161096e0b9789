"""Enrich orders by calling a customer service over HTTP, many at once, exactly once.

What it shows: an ``eos.AsyncProcessor``. Each order waits on an HTTP request, so
processing orders one by one would spend the time waiting; the engine runs up to
``max_in_flight`` of them at once on one event loop, keeps the records of one key in
their input order and commits only finished records (docs/async.md).

Orders arrive keyed by customer, as JSON values::

    key "c7"   value {"order": "o-000001", "customer": "c7", "amount": 12.5}

For each, ``process`` awaits ``GET /customers/c7`` on the customer service, which
answers ``{"customer": "c7", "tier": "gold", "region": "north"}``, and sends the order
merged with the answer, ``{**order, **customer}``, with the same key, to the output
topic::

    key "c7"   value {"order": "o-000001", "customer": "c7", "amount": 12.5,
                      "tier": "gold", "region": "north"}

The customer service is in this file too (:class:`CustomerService`, aiohttp): any id is
a customer, its tier and region derived from the id (:func:`customer`), answered after
``ASYNC_LATENCY_MS`` of latency. ``setup()`` starts it in a thread of this process, on
127.0.0.1 and a free port (unless ``CUSTOMERS_URL`` names one already running), and
opens one ``aiohttp.ClientSession``; ``teardown()`` closes both. Under ``eos run
--workers 2`` each worker process starts its own.

A tombstone (null value) is skipped. An order without a ``customer``, an HTTP error and
a timeout are processing errors (``processing_error_policy``). A record may be processed
again after an abort (its request is sent again), so the call must have no side effect:
it is a GET.

Two definitions are below: the AsyncProcessor ``EnrichOrders`` (used by ``app``) and the
DSL, ``build_dsl()`` with ``map_values_async`` (used by ``dsl_app`` and ``builder``).

Run it (the topics must exist; ``produce`` writes sample orders)::

    export EOS_BOOTSTRAP_SERVERS=127.0.0.1:9092
    python examples/async_enrichment.py produce --count 20
    eos run examples.async_enrichment:app
    eos run examples.async_enrichment:dsl_app --workers 2
    eos run examples.async_enrichment:builder --config async.properties
    ASYNC_LATENCY_MS=1-20 python examples/async_enrichment.py
    python examples/async_enrichment.py serve --port 8080   # the customer service alone

(the properties file needs ``application.id`` and ``bootstrap.servers``.) Settings come
from the environment: ``EOS_BOOTSTRAP_SERVERS``, ``ASYNC_APPLICATION_ID``
(default ``async-enrichment``), ``ASYNC_INPUT`` (default ``async-orders``),
``ASYNC_OUTPUT`` (default ``async-orders-enriched``), ``ASYNC_MAX_IN_FLIGHT`` (default
100), ``ASYNC_LATENCY_MS`` (milliseconds per request, or ``MIN-MAX`` for a uniform random
latency; default 5), ``CUSTOMERS_URL`` (a customer service already running, such as
``http://127.0.0.1:8080``: none is started then), ``ASYNC_DSL=1`` (``python
examples/async_enrichment.py`` runs ``dsl_app``) and ``ASYNC_PRINT=1`` (print every
enriched order).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import socket
import threading
import zlib
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web

import eos

INPUT = os.environ.get("ASYNC_INPUT", "async-orders")
OUTPUT = os.environ.get("ASYNC_OUTPUT", "async-orders-enriched")
MAX_IN_FLIGHT = int(os.environ.get("ASYNC_MAX_IN_FLIGHT", "100"))
LATENCY_MS = os.environ.get("ASYNC_LATENCY_MS", "5")
PRINT = os.environ.get("ASYNC_PRINT") == "1"

Order = dict[str, Any]
"""An order: ``{"order": ..., "customer": ..., "amount": ...}``."""

log = logging.getLogger("examples.async_enrichment")


# -- the customer service -------------------------------------------------------------

TIERS = ("bronze", "silver", "gold")
REGIONS = ("north", "south", "east", "west")


def customer(customer_id: str) -> dict[str, Any]:
    """What the service answers for ``customer_id``: the same every time."""
    h = zlib.crc32(customer_id.encode())
    return {
        "customer": customer_id,
        "tier": TIERS[h % len(TIERS)],
        "region": REGIONS[h // len(TIERS) % len(REGIONS)],
    }


def parse_latency(text: str) -> tuple[float, float]:
    """``"5"`` -> ``(5.0, 5.0)``; ``"1-20"`` -> ``(1.0, 20.0)``: milliseconds."""
    low, sep, high = text.strip().partition("-")
    bounds = (float(low), float(high if sep else low))
    if not 0 <= bounds[0] <= bounds[1]:
        raise ValueError(f"latency {text!r}: expected MS or MIN-MAX with 0 <= MIN <= MAX")
    return bounds


def service_app(latency_ms: tuple[float, float]) -> web.Application:
    """The service: ``GET /customers/{id}`` answers :func:`customer` after a latency
    drawn uniformly from ``latency_ms`` (min, max)."""
    low, high = latency_ms

    async def get_customer(request: web.Request) -> web.Response:
        delay = random.uniform(low, high)
        if delay > 0:
            await asyncio.sleep(delay / 1000)
        return web.json_response(customer(request.match_info["id"]))

    app = web.Application()
    app.router.add_get("/customers/{id}", get_customer)
    return app


class CustomerService:
    """The service, served by a daemon thread with its own event loop.

    ``start()`` returns once it listens on ``host``:``port`` (port 0: one the OS picks,
    read back into ``port``); ``url`` is then its base URL. ``stop()`` closes it.
    """

    def __init__(
        self, latency_ms: tuple[float, float] = (5.0, 5.0), host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.latency_ms = latency_ms
        self.host = host
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> CustomerService:
        if self._thread is not None:
            raise RuntimeError("the customer service was started already")
        self._thread = threading.Thread(target=self._serve, name="customer-service", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"the customer service did not start in {timeout}s")
        if self._error is not None:
            raise RuntimeError(f"the customer service did not start: {self._error!r}")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and wait for the thread to end (no-op when not running)."""
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        runner = web.AppRunner(service_app(self.latency_ms), access_log=None)
        try:
            loop.run_until_complete(self._listen(runner))
        except BaseException as exc:  # handed to start()
            self._error = exc
        self._ready.set()
        try:
            if self._error is None:
                loop.run_forever()
        finally:
            loop.run_until_complete(runner.cleanup())
            loop.close()

    async def _listen(self, runner: web.AppRunner) -> None:
        # A socket of our own, so that the port the OS picked can be read back.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        await runner.setup()
        await web.SockSite(runner, sock).start()


# -- the enrichment -------------------------------------------------------------------


class CustomerClient:
    """The customer service's client: one ``aiohttp.ClientSession``, opened and closed on
    the processing loop.

    Args:
        url: The service's base URL; None: ``open()`` starts a :class:`CustomerService`
            in this process (once: a second ``open()`` reuses it).
        latency_ms: The latency of a service it starts (see :func:`parse_latency`).
        connections: The most connections open at once (``max_in_flight``: one each).
    """

    def __init__(
        self, url: str | None = None, latency_ms: str = "5", connections: int = 100
    ) -> None:
        self.url = url
        self.latency_ms = latency_ms
        self.connections = connections
        self.service: CustomerService | None = None
        self.session: aiohttp.ClientSession | None = None
        self._opening = asyncio.Lock()

    async def open(self) -> None:
        async with self._opening:  # records in flight may call it at once
            await self._open()

    async def _open(self) -> None:
        base = self.url
        if base is None:
            if self.service is None:
                service = CustomerService(parse_latency(self.latency_ms))
                await asyncio.to_thread(service.start)
                self.service = service
                log.info("customer service started on %s", service.url)
            base = self.service.url
        if self.session is None:
            self.session = aiohttp.ClientSession(
                base_url=base,
                connector=aiohttp.TCPConnector(limit=self.connections),
                timeout=aiohttp.ClientTimeout(total=10),
                raise_for_status=True,
            )

    async def customer(self, customer_id: str) -> dict[str, Any]:
        """The customer's record; raises on an HTTP error or after 10 s."""
        if self.session is None:
            await self.open()
            assert self.session is not None
        async with self.session.get(f"/customers/{quote(customer_id, safe='')}") as response:
            answer: dict[str, Any] = await response.json()
        return answer

    async def enrich(self, order: Order) -> Order:
        """The order merged with its customer's record: ``{**order, **customer}``."""
        return {**order, **await self.customer(str(order["customer"]))}

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None
        if self.service is not None:
            await asyncio.to_thread(self.service.stop)
            self.service = None


def customer_client() -> CustomerClient:
    """A client configured from the environment (``CUSTOMERS_URL``, ``ASYNC_LATENCY_MS``)."""
    return CustomerClient(os.environ.get("CUSTOMERS_URL") or None, LATENCY_MS, MAX_IN_FLIGHT)


class EnrichOrders(eos.AsyncProcessor[str, Order | None]):
    """Sends each order merged with its customer's record to ``output``, with its key."""

    def __init__(self, output: str = OUTPUT, client: CustomerClient | None = None) -> None:
        self.output = output
        self.client = client or customer_client()

    async def setup(self) -> None:
        await self.client.open()

    async def process(
        self, record: eos.Record[str, Order | None], ctx: eos.Context[str, Order | None]
    ) -> None:
        if record.value is None:
            return
        enriched = await self.client.enrich(record.value)
        if PRINT:
            print(f"{record.key}: {json.dumps(enriched)}", flush=True)
        ctx.send(self.output, enriched, key=record.key)

    async def teardown(self) -> None:
        await self.client.close()


def build_dsl(
    client: CustomerClient | None = None, source: str = INPUT, output: str = OUTPUT
) -> eos.StreamBuilder:
    """The same enrichment in the DSL, with ``map_values_async``; the builder's
    ``on_setup``/``on_teardown`` hooks open and close the client on the processing loop."""
    lookup = client or customer_client()
    builder = eos.StreamBuilder()
    builder.on_setup(lookup.open)
    builder.on_teardown(lookup.close)
    orders = builder.stream(source, key_serde="string", value_serde="json")
    enriched = orders.filter(lambda _key, order: order is not None).map_values_async(lookup.enrich)
    if PRINT:
        enriched = enriched.peek(
            lambda key, order: print(f"{key}: {json.dumps(order)}", flush=True)
        )
    enriched.to(output, key_serde="string", value_serde="json")
    return builder


def _application(processor: eos.Processor, **options: Any) -> eos.Application:
    return eos.Application(
        application_id=os.environ.get("ASYNC_APPLICATION_ID", "async-enrichment"),
        bootstrap_servers=os.environ.get("EOS_BOOTSTRAP_SERVERS", "localhost:9092"),
        processor=processor,
        key_serde="string",
        value_serde="json",
        max_in_flight=MAX_IN_FLIGHT,
        **options,
    )


app = _application(EnrichOrders(), input_topics=[INPUT])
builder = build_dsl()
dsl_app = _application(builder.build())


def sample_orders(count: int, customers: int = 20, seed: int = 1) -> list[tuple[str, Order]]:
    """``count`` orders of ``customers`` customers, as ``(customer, order)`` pairs."""
    rng = random.Random(seed)
    orders: list[tuple[str, Order]] = []
    for i in range(count):
        key = f"c{rng.randrange(customers)}"
        amount = rng.randrange(100, 100_000) / 100
        orders.append((key, {"order": f"o-{i:06d}", "customer": key, "amount": amount}))
    return orders


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", nargs="?", default="run", choices=["run", "produce", "serve"])
    parser.add_argument("--count", type=int, default=20, help="produce: how many orders")
    parser.add_argument("--port", type=int, default=8080, help="serve: the port")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
    )
    if args.command == "produce":
        from eos.testing.helpers import produce

        bootstrap = os.environ.get("EOS_BOOTSTRAP_SERVERS", "localhost:9092")
        records = ((key, json.dumps(order)) for key, order in sample_orders(args.count))
        print(f"{produce(bootstrap, INPUT, records)} orders produced to {INPUT}")
    elif args.command == "serve":
        web.run_app(service_app(parse_latency(LATENCY_MS)), host="127.0.0.1", port=args.port)
    else:
        (dsl_app if os.environ.get("ASYNC_DSL") == "1" else app).run()


if __name__ == "__main__":
    main()
