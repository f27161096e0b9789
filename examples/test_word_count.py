"""Unit tests for examples/word_count.py with eos's TestDriver: no broker, milliseconds.

A template for your own (docs/testing.md walks through it). Run it with::

    pytest examples/test_word_count.py
"""

from __future__ import annotations

import pytest

import eos
from eos.testing import TestDriver
from examples.word_count import STORE, build


def word_count_driver(partitions: int = 1) -> TestDriver:
    """The word-count topology, reading its two topics as the application does."""
    return TestDriver(
        build("lines", "words", "counts").build(),  # input_topics: the builder's topics
        partitions=partitions,
        key_serde="string",
        value_serde="string",
    )


def feed_back(driver: TestDriver, topic: str, start: int) -> int:
    """Send what ``topic`` received since ``start`` back in, as the broker would deliver it."""
    outputs = driver.outputs(topic)
    driver.send_many(((o.key, o.value) for o in outputs[start:]), topic=topic)
    return len(outputs)


def test_a_line_is_split_into_words_keyed_by_word() -> None:
    """Step 1: each word of a line goes to the repartition topic, key and value the word."""
    driver = word_count_driver()
    driver.send("The fox, the dog", key="line-1")
    assert driver.output_pairs("words") == [
        ("the", "the"),
        ("fox", "fox"),
        ("the", "the"),
        ("dog", "dog"),
    ]
    assert driver.outputs("counts") == []  # nothing counted until the words come back


def test_words_fed_back_are_counted_and_stored() -> None:
    """Step 2: every word from the repartition topic updates its count and the store."""
    driver = word_count_driver(partitions=4)
    fed = 0
    for i, line in enumerate(["the fox", "the dog", "a fox"]):
        driver.send(line, key=f"line-{i}")
        fed = feed_back(driver, "words", fed)
    assert driver.output_values("counts")[-2:] == ["a: 1", "fox: 2"]
    assert driver.store(STORE) == {"the": 2, "fox": 2, "dog": 1, "a": 1}


def test_a_topic_the_application_does_not_read_is_refused() -> None:
    """Sending to a topic outside the topology is a mistake the driver reports."""
    driver = word_count_driver()
    with pytest.raises(eos.ConfigError, match="does not read topic 'line'"):
        driver.send("typo in the topic name", topic="line")
