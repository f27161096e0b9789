"""Bank transfers with balances in a state store: money is conserved, exactly once.

What it shows: a stateful pipeline whose one input record changes state in
TWO partitions, done correctly with a second step through Kafka, and a
verifier that proves no transfer was lost or applied twice.

A transfer ``{"id", "from", "to", "amount"}`` arrives on ``transfers`` keyed
by its source account. The balance of an account lives in the store
partition of the account's key, and the destination may live in another
partition (possibly on another instance), so one processor call cannot update
both. The application (``input_topics=[transfers, credits]``) does it in two
steps, each atomic with its input offset:

1. a transfer, keyed by ``from``: debit ``from`` in the store ``balances``,
   send the new balance to ``balances``, and send the transfer to ``credits``
   keyed by ``to`` (so it lands in the destination account's partition);
2. a credit, keyed by ``to``: credit ``to`` in the store, send its new balance.

Between the two steps the money is "in flight" in ``credits``; once both
topics are processed, the total is what it was. Exactly-once is what makes
that hold across crashes: a debit, its credit record and the input offset
commit together, and so do a credit and its offset.

Choices:

- Every account opens with ``OPENING_BALANCE`` (1,000) the first time it is
  seen, so the total money is ``OPENING_BALANCE`` times the number of accounts.
- Balances may go negative (an overdraft). Rejecting a transfer for lack of
  funds would depend on whether credits to the account were processed before
  it, which Kafka does not order across topics: the outcome would depend on
  timing, and no replay of the input could check it. Overdrafts keep every
  balance a function of the input alone.
- Invalid transfers (not JSON, a missing field, an amount that is not a
  positive integer, ``from == to``, or a key other than ``from``) raise
  ``InvalidTransfer`` and go to the dead-letter topic with their
  ``eos.error.*`` headers (``processing_error_policy="dead_letter"``); they
  move no money.
- Whoever produces ``transfers`` must partition by key the way eos's own
  producer does (librdkafka's default, CRC32 of the key, as here), so that
  ``transfers`` keyed by A and ``credits`` keyed by A meet in one partition; with
  a Java producer (murmur2) pass ``producer_config={"partitioner":
  "murmur2_random"}`` to the application. All topics need the same partition
  count.

See it all at once on fresh topics (5,000 transfers between 100 accounts,
processed, audited; exits 1 if the audit fails)::

    EOS_BOOTSTRAP_SERVERS=127.0.0.1:9092 python examples/bank_transfers.py

Or run the application (creates the topics if missing, runs until Ctrl-C or
SIGTERM), feed it from another shell, and audit the result::

    export EOS_BOOTSTRAP_SERVERS=127.0.0.1:9092
    python examples/bank_transfers.py run
    python examples/bank_transfers.py produce --accounts 100 --count 5000
    python examples/bank_transfers.py verify

``verify`` (the function :func:`verify`) reads ``balances`` with a
``read_committed`` consumer, takes the last balance of every account, and
checks that the total equals the opening total, that every account equals the
balance a Python replay of the transfers gives, and that there are exactly
two balance updates per valid transfer (one debit, one credit).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import cast

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

import eos
from eos.testing.helpers import produce, read_topic, unique_name, wait_no_open_transactions

OPENING_BALANCE = 1_000
STORE = "balances"
ACCOUNT_PREFIX = "acct-"


class InvalidTransfer(ValueError):
    """A transfer record that cannot be applied; it is dead-lettered, moving no money."""


@dataclass(frozen=True, slots=True)
class Transfer:
    """A validated transfer of ``amount`` (a positive integer) from ``source`` to ``target``."""

    id: str
    source: str
    target: str
    amount: int

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "from": self.source, "to": self.target, "amount": self.amount}


def parse_transfer(key: object, value: object, *, keyed_by: str = "from") -> Transfer:
    """Validate a transfer record whose key must equal its ``keyed_by`` field.

    Raises:
        InvalidTransfer: why the record is not a valid transfer.
    """
    if not isinstance(value, dict):
        raise InvalidTransfer(f"a transfer is a JSON object, got {type(value).__name__}")
    missing = [f for f in ("id", "from", "to", "amount") if f not in value]
    if missing:
        raise InvalidTransfer(f"missing field(s) {missing}")
    tid, source, target, amount = value["id"], value["from"], value["to"], value["amount"]
    if not all(isinstance(v, str) and v for v in (tid, source, target)):
        raise InvalidTransfer("id, from and to must be non-empty strings")
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise InvalidTransfer(f"amount must be a positive integer, got {amount!r}")
    if source == target:
        raise InvalidTransfer(f"transfer {tid} from {source} to itself")
    if key != value[keyed_by]:
        raise InvalidTransfer(
            f"transfer {tid} is keyed {key!r}, not by {keyed_by!r} ({value[keyed_by]!r})"
        )
    return Transfer(tid, source, target, amount)


class BankTransfers(eos.Processor):
    """Step 1 on ``transfers`` (debit, forward a credit), step 2 on ``credits`` (credit).

    Args:
        transfers: Input topic of transfers keyed by ``from``.
        credits: The credits topic (keyed by ``to``), also an input.
        balances: Output topic of balance changes (key account, value new balance).
    """

    stores = [eos.Store(STORE)]

    def __init__(self, transfers: str, credits: str, balances: str) -> None:
        self.transfers = transfers
        self.credits = credits
        self.balances = balances

    def process(self, record: eos.Record, ctx: eos.Context) -> None:
        # Validate before any write: a record that raises leaves nothing behind.
        if record.topic == self.credits:
            transfer = parse_transfer(record.key, record.value, keyed_by="to")
            account, change = transfer.target, transfer.amount
        else:
            transfer = parse_transfer(record.key, record.value, keyed_by="from")
            account, change = transfer.source, -transfer.amount
        balances = ctx.store(STORE)
        balance = cast(int, balances.get(account, OPENING_BALANCE)) + change
        balances[account] = balance
        ctx.send(self.balances, key=account, value=balance)
        if record.topic != self.credits:
            ctx.send(self.credits, key=transfer.target, value=transfer.to_json())


def application(
    *,
    bootstrap_servers: str,
    transfers: str = "transfers",
    credits: str = "credits",
    balances: str = "balances",
    rejected: str = "transfers-rejected",
    application_id: str = "bank-transfers",
    instance_id: str = "0",
    state_dir: str = "./state",
) -> eos.Application:
    """The two-step transfer application; invalid transfers go to ``rejected``."""
    return eos.Application(
        application_id=application_id,
        bootstrap_servers=bootstrap_servers,
        input_topics=[transfers, credits],
        processor=BankTransfers(transfers, credits, balances),
        instance_id=instance_id,
        key_serde="string",
        value_serde="json",
        processing_error_policy="dead_letter",
        dead_letter_topic=rejected,
        state_dir=state_dir,
    )


# -- feeding -------------------------------------------------------------------


def random_transfers(
    accounts: int, count: int, *, seed: int = 1, invalid_every: int = 0
) -> list[tuple[str, str]]:
    """``count`` transfers as ``(key, json text)`` between ``accounts`` accounts.

    With ``invalid_every=n``, every n-th one is invalid in one of five ways
    (bad JSON, missing field, zero amount, to itself, wrong key).
    """
    rng = random.Random(seed)
    names = [f"{ACCOUNT_PREFIX}{i:04d}" for i in range(accounts)]
    records: list[tuple[str, str]] = []
    for i in range(count):
        source, target = rng.sample(names, 2)
        value: dict[str, object] = {
            "id": f"t{i:07d}",
            "from": source,
            "to": target,
            "amount": rng.randint(1, 500),
        }
        key = source
        if invalid_every and i % invalid_every == invalid_every - 1:
            kind = (i // invalid_every) % 5
            if kind == 0:
                records.append((key, f'{{"id": "t{i:07d}", "from": '))
                continue
            if kind == 1:
                del value["to"]
            elif kind == 2:
                value["amount"] = 0
            elif kind == 3:
                value["to"] = source
            else:
                key = target
        records.append((key, json.dumps(value)))
    return records


# -- auditing ------------------------------------------------------------------


@dataclass
class Audit:
    """What :func:`verify` found; ``ok`` when money was conserved and every account is exact."""

    transfers: int = 0
    valid: int = 0
    invalid: int = 0
    expected: dict[str, int] = field(default_factory=dict)
    found: dict[str, int] = field(default_factory=dict)
    balance_updates: int = 0
    dead_letters: int | None = None

    @property
    def opening_total(self) -> int:
        return OPENING_BALANCE * len(self.expected)

    @property
    def total(self) -> int:
        return sum(self.found.values())

    @property
    def wrong_accounts(self) -> dict[str, tuple[int | None, int | None]]:
        """``{account: (found, expected)}`` where they differ."""
        names = set(self.expected) | set(self.found)
        return {
            a: (self.found.get(a), self.expected.get(a))
            for a in sorted(names)
            if self.found.get(a) != self.expected.get(a)
        }

    @property
    def ok(self) -> bool:
        return (
            self.total == self.opening_total
            and not self.wrong_accounts
            and self.balance_updates == 2 * self.valid
            and self.dead_letters in (None, self.invalid)
        )

    def __str__(self) -> str:
        wrong = self.wrong_accounts
        return (
            f"transfers={self.transfers} valid={self.valid} invalid={self.invalid} "
            f"dead_letters={self.dead_letters} accounts={len(self.expected)} "
            f"balance_updates={self.balance_updates} (expected {2 * self.valid}) "
            f"total={self.total} opening_total={self.opening_total} "
            f"wrong_accounts={len(wrong)}" + (f" e.g. {list(wrong.items())[:3]}" if wrong else "")
        )


def replay(records: Iterable[tuple[bytes | str | None, bytes | str | None]]) -> Audit:
    """The balances the transfers must produce, computed in Python (no Kafka)."""
    audit = Audit()
    expected = audit.expected
    for raw_key, raw_value in records:
        audit.transfers += 1
        key = raw_key.decode() if isinstance(raw_key, bytes) else raw_key
        try:
            transfer = parse_transfer(key, json.loads(raw_value or b"null"))
        except ValueError:  # InvalidTransfer, JSONDecodeError, UnicodeDecodeError
            audit.invalid += 1
            continue
        audit.valid += 1
        expected[transfer.source] = expected.get(transfer.source, OPENING_BALANCE) - transfer.amount
        expected[transfer.target] = expected.get(transfer.target, OPENING_BALANCE) + transfer.amount
    return audit


def verify(
    bootstrap_servers: str,
    transfers: str,
    balances: str,
    rejected: str | None = None,
) -> Audit:
    """Audit ``balances`` (read_committed) against a Python replay of ``transfers``.

    The last balance of each account must equal the replay's, their total the
    opening total, and there must be exactly two balance updates per valid
    transfer. With ``rejected``, the dead-letter topic must hold exactly one
    record per invalid transfer.
    """
    audit = replay((r.key, r.value) for r in read_topic(bootstrap_servers, transfers))
    wait_no_open_transactions(bootstrap_servers, balances)
    # One account lives in one partition, read in offset order: the last value wins.
    for record in read_topic(bootstrap_servers, balances):
        if record.key is None or record.value is None:
            raise ValueError(f"balances record without key or value at {record}")
        audit.found[record.key.decode()] = int(json.loads(record.value))
        audit.balance_updates += 1
    if rejected is not None:
        wait_no_open_transactions(bootstrap_servers, rejected)
        audit.dead_letters = len(read_topic(bootstrap_servers, rejected))
    return audit


# -- command line ----------------------------------------------------------------


def ensure_topics(bootstrap_servers: str, topics: Sequence[str], partitions: int) -> None:
    """Create the topics that do not exist yet, each with ``partitions`` partitions."""
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    futures = admin.create_topics([NewTopic(t, partitions, 1) for t in topics])
    for future in futures.values():
        try:
            future.result(30)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise


def demo(bootstrap_servers: str, accounts: int, count: int, state_dir: str) -> Audit:
    """Run the application on fresh topics over ``count`` random transfers; audit it."""
    transfers, credits, balances, rejected = (
        unique_name(p) for p in ("transfers", "credits", "balances", "rejected")
    )
    ensure_topics(bootstrap_servers, [transfers, credits, balances], 4)
    records = random_transfers(accounts, count, invalid_every=100)
    produce(bootstrap_servers, transfers, records)
    want = 2 * replay(records).valid
    app = application(
        bootstrap_servers=bootstrap_servers,
        transfers=transfers,
        credits=credits,
        balances=balances,
        rejected=rejected,
        application_id=unique_name("bank"),
        state_dir=state_dir,
    )
    runner = threading.Thread(target=app.run, daemon=True)
    started = time.monotonic()
    runner.start()
    try:
        while (done := len(read_topic(bootstrap_servers, balances))) < want:
            if time.monotonic() - started > 120 or not runner.is_alive():
                raise RuntimeError(f"{done}/{want} balance updates after 120 s")
            time.sleep(0.5)
    finally:
        app.stop()
        runner.join(60)
    audit = verify(bootstrap_servers, transfers, balances, rejected)
    print(f"{count} transfers between {accounts} accounts in {time.monotonic() - started:.1f}s")
    print(audit)
    return audit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "command", nargs="?", default="demo", choices=["demo", "run", "produce", "verify"]
    )
    parser.add_argument(
        "--bootstrap-servers", default=os.environ.get("EOS_BOOTSTRAP_SERVERS", "localhost:9092")
    )
    parser.add_argument("--transfers", default="transfers")
    parser.add_argument("--credits", default="credits")
    parser.add_argument("--balances", default="balances")
    parser.add_argument("--rejected", default="transfers-rejected", help="dead-letter topic")
    parser.add_argument("--application-id", default="bank-transfers")
    parser.add_argument("--instance-id", default="0")
    parser.add_argument("--state-dir", default="./state")
    parser.add_argument("--partitions", type=int, default=4, help="for topics it creates")
    parser.add_argument("--accounts", type=int, default=100, help="produce/demo")
    parser.add_argument("--count", type=int, default=5_000, help="transfers to produce/demo")
    parser.add_argument("--seed", type=int, default=1, help="produce")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.command == "run" else logging.WARNING,
        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s",
    )
    bootstrap = args.bootstrap_servers
    if args.command == "demo":
        return 0 if demo(bootstrap, args.accounts, args.count, args.state_dir).ok else 1
    if args.command == "produce":
        records = random_transfers(args.accounts, args.count, seed=args.seed, invalid_every=100)
        produce(bootstrap, args.transfers, records)
        print(f"produced {len(records)} transfers to {args.transfers}")
        return 0
    if args.command == "verify":
        audit = verify(bootstrap, args.transfers, args.balances, args.rejected)
        print(audit)
        return 0 if audit.ok else 1
    ensure_topics(bootstrap, [args.transfers, args.credits, args.balances], args.partitions)
    application(
        bootstrap_servers=bootstrap,
        transfers=args.transfers,
        credits=args.credits,
        balances=args.balances,
        rejected=args.rejected,
        application_id=args.application_id,
        instance_id=args.instance_id,
        state_dir=args.state_dir,
    ).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
