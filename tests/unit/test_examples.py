"""The examples' processors, run through the TestDriver (no broker)."""

from __future__ import annotations

import importlib.util
import random
import sys
import time
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest

import eos
from eos.testing import TestDriver

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


count_per_key = _load("count_per_key")


@pytest.mark.parametrize("form", ["CountPerKey", "CountPerKeyBatch"])
@pytest.mark.parametrize("backend", ["rocksdb", "memory"])
def test_count_per_key_emits_running_counts_and_stores_totals(backend: str, form: str) -> None:
    """CountPerKey (and its BatchProcessor form, --batch) sends 1..n per key in input order
    and its store ends at the true counts."""
    rng = random.Random(3)
    keys = [f"k{rng.randrange(50)}" for _ in range(2_000)]
    started = time.perf_counter()
    driver = TestDriver(
        getattr(count_per_key, form)("counts-out", backend),
        key_serde="string",
        value_serde="string",
        partitions=4,
    )
    for i, key in enumerate(keys):
        driver.send(f"v{i}", key=key)
    pairs = driver.output_pairs("counts-out")
    store = driver.store("counts")
    elapsed = time.perf_counter() - started
    print(f"{backend}: {len(keys)} records, {len(store)} keys in {elapsed * 1000:.0f} ms")

    seen: Counter[str] = Counter()
    expected = []
    for key in keys:
        seen[key] += 1
        expected.append((key, str(seen[key])))
    assert pairs == expected
    assert store == dict(seen)
    assert driver.topics() == ["counts-out"]


def test_count_per_key_declares_the_chosen_backend() -> None:
    """The backend argument reaches the store declaration the engine reads."""
    assert [(s.name, s.backend) for s in count_per_key.CountPerKey("o").stores] == [
        ("counts", "rocksdb")
    ]
    assert [s.backend for s in count_per_key.CountPerKey("o", "memory").stores] == ["memory"]


# -- word_count, bank_transfers, dead_letter ----------------------------------------

word_count = _load("word_count")
bank_transfers = _load("bank_transfers")
dead_letter = _load("dead_letter")


class _BytesOrJson:
    """The JSON serde, except that bytes are written as they are: lets a test feed
    malformed JSON to an application whose value serde is ``json``."""

    def serialize(self, value: object) -> bytes | None:
        return value if isinstance(value, bytes) else eos.JsonSerde().serialize(value)

    def deserialize(self, data: bytes | None) -> object:
        return eos.JsonSerde().deserialize(data)


def test_word_count_counts_every_word_through_the_repartition_topic() -> None:
    """Lines split into words on the repartition topic, fed back as the broker would,
    give each word the updates "w: 1".."w: N" and a store holding each word in one partition."""
    rng = random.Random(7)
    vocabulary = [f"w{i}" for i in range(40)]
    lines = [" ".join(rng.choices(vocabulary, k=rng.randint(0, 12))) for _ in range(500)]
    lines += ["The the THE, the.", None]  # case and punctuation; a null line has no words
    driver = TestDriver(
        word_count.build("lines", "words", "counts").build(),
        input_topics=["lines", "words"],
        partitions=4,
        key_serde="string",
        value_serde="string",
    )
    fed = 0
    for i, line in enumerate(lines):
        driver.send(line, key=f"line-{i}")
        # The words this line produced come back from the repartition topic,
        # partitioned by word (the driver hashes keys as librdkafka does).
        for word in driver.outputs("words")[fed:]:
            driver.send(word.value, key=word.key, topic="words")
        fed = len(driver.outputs("words"))

    truth = Counter(w for line in lines for w, _ in word_count.words_of(line))
    updates: dict[str, list[str]] = {}
    for word, text in driver.output_pairs("counts"):
        updates.setdefault(str(word), []).append(str(text))
    print(f"{len(lines)} lines, {sum(truth.values())} words, {len(truth)} distinct")
    assert truth["the"] == 4
    assert updates == {w: [f"{w}: {i}" for i in range(1, n + 1)] for w, n in truth.items()}
    assert driver.store(word_count.STORE) == dict(truth)
    per_partition = [set(driver.store(word_count.STORE, p)) for p in range(4)]
    assert sum(len(keys) for keys in per_partition) == len(truth)  # each word in one partition


def test_word_count_without_the_manual_words_topic_repartitions_by_itself() -> None:
    """Counting the re-keyed words directly (group_by_key() after flat_map) goes through
    the DSL's own repartition topic and gives the example's counts."""
    lines = ["the quick the", "fox the quick", None]
    builder = eos.StreamBuilder()
    words = builder.stream("lines").flat_map(lambda _k, line: word_count.words_of(line))
    words.group_by_key().count(store=word_count.STORE).to_stream().map(
        lambda word, n: (word, f"{word}: {n}")
    ).to("counts")
    driver = TestDriver(builder.build(), partitions=4, key_serde="string", value_serde="string")
    for i, line in enumerate(lines):
        driver.send(line, key=f"line-{i}")
    truth = Counter(w for line in lines for w, _ in word_count.words_of(line))
    assert driver.store(word_count.STORE) == dict(truth)
    assert driver.output_values("counts")[-1] == "quick: 2"


def _run_bank(records: list[tuple[str, str]]) -> TestDriver:
    driver = TestDriver(
        bank_transfers.BankTransfers("transfers", "credits", "balances"),
        input_topics=["transfers", "credits"],
        partitions=4,
        key_serde="string",
        value_serde=_BytesOrJson(),
        processing_error_policy="dead_letter",
        dead_letter_topic="rejected",
    )
    fed = 0
    for key, text in records:
        driver.send(text.encode(), key=key)
        # Step 2: each credit comes back keyed by the destination account.
        for credit in driver.outputs("credits")[fed:]:
            driver.send(credit.value, key=credit.key, topic="credits")
        fed = len(driver.outputs("credits"))
    return driver


def test_bank_transfers_conserve_money_and_match_the_replay() -> None:
    """Debits on transfers and credits fed back on credits leave every account at the
    replayed balance, the total at the opening total, and invalid transfers in the DLQ."""
    records = bank_transfers.random_transfers(30, 2_000, seed=4, invalid_every=40)
    started = time.perf_counter()
    driver = _run_bank(records)
    elapsed = time.perf_counter() - started
    expected = bank_transfers.replay(records)
    last: dict[str, int] = {}
    for account, balance in driver.output_pairs("balances"):
        last[str(account)] = int(balance)  # type: ignore[call-overload]
    letters = driver.outputs("rejected")
    kinds = Counter(dict(o.headers or [])["eos.error.type"] for o in letters)
    print(
        f"{len(records)} transfers ({expected.valid} valid, {expected.invalid} invalid) "
        f"in {elapsed * 1000:.0f} ms; dead letters {dict(kinds)}"
    )
    assert expected.invalid == 50
    assert last == expected.expected
    assert driver.store(bank_transfers.STORE) == expected.expected
    assert sum(last.values()) == bank_transfers.OPENING_BALANCE * len(expected.expected)
    assert len(driver.outputs("balances")) == 2 * expected.valid
    assert len(driver.outputs("credits")) == expected.valid
    assert kinds == {b"SerializationError": 10, b"InvalidTransfer": 40}
    # A credit lands in the store partition that holds the account's debits.
    per_partition = [set(driver.store(bank_transfers.STORE, p)) for p in range(4)]
    assert sum(len(accounts) for accounts in per_partition) == len(expected.expected)


def test_bank_audit_catches_a_lost_or_repeated_credit() -> None:
    """The audit fails when a credit is missing or applied twice, and passes when exact."""
    records = bank_transfers.random_transfers(10, 200, seed=1)
    driver = _run_bank(records)
    updates = driver.output_pairs("balances")

    def audit(pairs: list[tuple[object, object]]) -> bank_transfers.Audit:
        result = bank_transfers.replay(records)
        for account, balance in pairs:
            result.found[str(account)] = int(balance)  # type: ignore[call-overload]
            result.balance_updates += 1
        return result

    assert audit(updates).ok
    account, balance = updates[-1]
    lost = audit(updates[:-1])
    repeated = audit([*updates, (account, int(balance) + 1)])  # type: ignore[call-overload]
    assert not lost.ok and not repeated.ok
    assert repeated.total != repeated.opening_total
    print(f"exact: {audit(updates)}\nrepeated: {repeated}")


def test_dead_letter_sends_malformed_orders_to_the_dlq_with_headers() -> None:
    """Valid orders reach the output with amount_cents; invalid JSON and invalid orders reach
    the DLQ as their original bytes with eos.error.* and eos.source.* headers."""
    driver = TestDriver(
        dead_letter.ValidateOrders("valid"),
        input_topics="orders",
        key_serde="string",
        value_serde=_BytesOrJson(),
        processing_error_policy="dead_letter",
        dead_letter_topic="dlq",
        application_id="dlq-test",
    )
    for key, text in dead_letter.SAMPLES:
        driver.send(None if text is None else text.encode(), key=key)
    assert [o.value for o in driver.outputs("valid")] == [
        {"id": "o-1", "customer": "alice", "amount": 12.5, "amount_cents": 1250},
        {"id": "o-2", "customer": "bob", "amount": 3, "amount_cents": 300},
        {"id": "o-8", "customer": "alice", "amount": 0.99, "amount_cents": 99},
    ]
    letters = driver.outputs("dlq")
    by_value = {o.raw_value: dict(o.headers or []) for o in letters}
    bad = [(k, t.encode()) for k, t in dead_letter.SAMPLES if t is not None][2:7]
    assert list(by_value) == [value for _key, value in bad]
    assert [o.raw_key for o in letters] == [k.encode() for k, _v in bad if k]
    assert [h["eos.error.type"] for h in by_value.values()] == [
        b"SerializationError",
        b"InvalidOrder",
        b"SerializationError",
        b"InvalidOrder",
        b"InvalidOrder",
    ]
    headers = by_value[b'{"id": "o-4", "amount": 9}']
    assert headers["eos.error.message"] == b"missing required field(s) ['customer']"
    assert headers["eos.source.topic"] == b"orders"
    assert headers["eos.application.id"] == b"dlq-test"


def test_async_enrichment_enriches_through_its_customer_service() -> None:
    """EnrichOrders and the map_values_async version call the example's own HTTP service
    (started on a free port in setup, stopped in teardown) and merge the answer."""
    module = _load("async_enrichment")
    orders = module.sample_orders(12, customers=4)
    for processor in (
        module.EnrichOrders("enriched", module.CustomerClient(latency_ms="1")),
        module.build_dsl(module.CustomerClient(latency_ms="1"), "orders", "enriched").build(),
    ):
        driver = TestDriver(processor, input_topic="orders", key_serde="string", value_serde="json")
        for key, order in orders:
            driver.send(order, key=key)
        driver.close()
        assert driver.output_pairs("enriched") == [
            (key, {**order, **module.customer(key)}) for key, order in orders
        ]
