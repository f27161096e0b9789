"""Word count, exactly once: lines in, ``<word>: <count>`` updates out.

What it shows: a stateful DSL pipeline that re-keys, with the repartition
step it needs written out by hand. Counting per word needs every occurrence
of a word in ONE partition (a store partition serves one input partition),
but the lines arrive keyed by anything (or nothing), so a word's occurrences
are spread over every partition of ``lines``. The pipeline is therefore two
steps in one application, ``input_topics=[lines, words]``:

1. ``stream(lines).flat_map(...)`` splits each line into ``(word, word)``
   records, re-keyed by word, and sends them ``.to(words)``: the producer
   partitions by key, so all occurrences of a word land in one partition of
   ``words`` (the repartition topic, as Kafka Streams would create);
2. ``stream(words).group_by_key().count(store="word-counts")`` counts per word
   in a changelog-backed store and sends every new count as
   ``"<word>: <count>"`` (key: the word) to ``output``.

Both steps run in the same transactions as the input offsets: a line's words
reach ``words`` exactly once, and each word record is counted exactly once.
``lines`` and ``words`` need the same partition count (``main`` creates them).

A ``Processor`` counting per word directly on ``lines`` would be wrong here:
it is only correct when the input is already keyed (and so partitioned) by
word; with lines, one word would get a separate partial count in each
partition. The DSL takes the same two steps by itself for ``group_by_key()``
after ``flat_map`` (or for ``group_by(fn)``), through an internal topic
``<application_id>-word-counts-repartition`` it creates (see docs/joins.md);
this example names its repartition topic and reads it as a stream.

See it work end to end on fresh topics with sample text (prints the final
counts and exits)::

    EOS_BOOTSTRAP_SERVERS=127.0.0.1:9092 python examples/word_count.py

Run the application (creates the topics if missing, runs until Ctrl-C or
SIGTERM)::

    EOS_BOOTSTRAP_SERVERS=127.0.0.1:9092 python examples/word_count.py run \
        --lines text-lines --words word-count-words --output word-counts
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Sequence

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

import eos
from eos.testing.helpers import produce, read_topic, unique_name

STORE = "word-counts"
_WORD = re.compile(r"\w+")

SAMPLE_TEXT = """\
the quick brown fox jumps over the lazy dog
the dog barks and the fox runs
exactly once means every word is counted once
once more with feeling
"""


def words_of(line: object) -> list[tuple[str, str]]:
    """``(word, word)`` for every word of ``line``, lower-cased (None: no words)."""
    if not isinstance(line, str):
        return []
    return [(w, w) for w in _WORD.findall(line.lower())]


def build(lines: str, words: str, output: str) -> eos.StreamBuilder:
    """The two-step word count: split and repartition, then count per word.

    Both streams are typed by their serdes (``Stream[str, str]``); ``to(words)``
    writes with the serdes ``stream(words)`` reads with.
    """
    builder = eos.StreamBuilder()
    text = builder.stream(lines, key_serde="string", value_serde="string")
    text.flat_map(lambda _key, line: words_of(line)).to(words)
    word_stream = builder.stream(words, key_serde="string", value_serde="string")
    counts = word_stream.group_by_key().count(store=STORE)
    counts.to_stream().map(lambda word, n: (word, f"{word}: {n}")).to(output)
    return builder


def application(
    *,
    bootstrap_servers: str,
    lines: str,
    words: str,
    output: str,
    application_id: str = "word-count",
    state_dir: str = "./state",
    instance_id: str = "0",
) -> eos.Application:
    """The word-count application reading ``lines`` and its own repartition topic ``words``."""
    builder = build(lines, words, output)
    return eos.Application(
        application_id=application_id,
        bootstrap_servers=bootstrap_servers,
        input_topics=[lines, words],
        processor=builder.build(),
        instance_id=instance_id,
        key_serde="string",
        value_serde="string",
        state_dir=state_dir,
    )


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


def final_counts(updates: Iterable[tuple[str, str]]) -> dict[str, int]:
    """The last ``"<word>: <count>"`` of each word, as ``{word: count}``."""
    result: dict[str, int] = {}
    for word, text in updates:
        result[word] = int(text.rpartition(": ")[2])
    return result


def demo(bootstrap_servers: str, partitions: int, state_dir: str) -> dict[str, int]:
    """Count ``SAMPLE_TEXT`` on fresh topics, print the updates and return the final counts."""
    lines, words, output = (unique_name(p) for p in ("lines", "words", "word-counts"))
    ensure_topics(bootstrap_servers, [lines, words, output], partitions)
    text = SAMPLE_TEXT.splitlines()
    produce(bootstrap_servers, lines, ((None, line) for line in text))
    expected = sum(len(words_of(line)) for line in text)
    app = application(
        bootstrap_servers=bootstrap_servers,
        lines=lines,
        words=words,
        output=output,
        application_id=unique_name("word-count"),
        state_dir=state_dir,
    )
    runner = threading.Thread(target=app.run, daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + 120
        while len(updates := read_topic(bootstrap_servers, output)) < expected:
            if time.monotonic() > deadline or not runner.is_alive():
                raise RuntimeError(f"{len(updates)}/{expected} count updates after 120 s")
            time.sleep(0.5)
    finally:
        app.stop()
        runner.join(60)
    pairs = [(r.key.decode(), r.value.decode()) for r in updates if r.key and r.value]
    counts = final_counts(pairs)
    print(f"{len(text)} lines, {expected} words -> {len(pairs)} updates on {output}; last ones:")
    for word, n in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        print(f"  {word}: {n}")
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", nargs="?", default="demo", choices=["demo", "run"])
    parser.add_argument(
        "--bootstrap-servers", default=os.environ.get("EOS_BOOTSTRAP_SERVERS", "localhost:9092")
    )
    parser.add_argument("--lines", default="text-lines")
    parser.add_argument("--words", default="word-count-words", help="the repartition topic")
    parser.add_argument("--output", default="word-counts")
    parser.add_argument("--application-id", default="word-count")
    parser.add_argument("--instance-id", default="0")
    parser.add_argument("--state-dir", default="./state")
    parser.add_argument("--partitions", type=int, default=4, help="for topics it creates")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.command == "run" else logging.WARNING,
        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "demo":
        demo(args.bootstrap_servers, args.partitions, args.state_dir)
        return
    ensure_topics(args.bootstrap_servers, [args.lines, args.words, args.output], args.partitions)
    application(
        bootstrap_servers=args.bootstrap_servers,
        lines=args.lines,
        words=args.words,
        output=args.output,
        application_id=args.application_id,
        state_dir=args.state_dir,
        instance_id=args.instance_id,
    ).run()


if __name__ == "__main__":
    main()
