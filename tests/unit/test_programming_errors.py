"""Programming errors in a processor are ConfigErrors when the app is built, never poison."""

from __future__ import annotations

import pytest

import eos
from eos.serde import JsonSerde
from eos.testing import TestDriver

SETTINGS = {
    "application_id": "app",
    "bootstrap_servers": "127.0.0.1:9",
    "input_topics": ["in"],
}


def _build(processor: object) -> eos.ConfigError:
    """Both ways of building must refuse it: the Application and the TestDriver."""
    with pytest.raises(eos.ConfigError) as app_error:
        eos.Application(**SETTINGS, processor=processor)  # type: ignore[arg-type]
    with pytest.raises(eos.ConfigError) as driver_error:
        TestDriver(processor)  # type: ignore[arg-type]
    assert str(app_error.value) == str(driver_error.value)
    return app_error.value


class Counts(eos.Processor):
    stores = [eos.Store("counts")]

    def process(self, record: eos.Record, ctx: eos.Context) -> None:
        ctx.store("counts")[record.key] = 1
        ctx.store("totals")[record.key] = 1


def test_undeclared_store_name_is_refused_at_build_naming_the_fix() -> None:
    """ctx.store('totals') in process() without eos.Store('totals') in stores is a ConfigError
    that names the store and what to add."""
    error = _build(Counts())
    assert "ctx.store('totals')" in str(error) and "eos.Store('totals')" in str(error)
    assert "'counts'" in str(error)


class Helper(eos.Processor):
    stores = [eos.Store("a")]

    def process(self, record: eos.Record, c: eos.Context) -> None:
        self._bump(c)

    def _bump(self, ctx: eos.Context) -> None:
        ctx.store("b")["k"] = 1


def test_undeclared_store_in_a_helper_method_is_found() -> None:
    """The check reads the whole class, whatever the context parameter is called."""
    error = _build(Helper())
    assert "Helper._bump uses ctx.store('b')" in str(error)


def test_processor_without_process_is_refused() -> None:
    """A Processor subclass that forgot process() is a ConfigError, not a per-record error."""

    class Forgot(eos.Processor):
        def proces(self, record: eos.Record, ctx: eos.Context) -> None:  # typo
            pass

    assert "does not implement process" in str(_build(Forgot()))


def test_processor_class_instead_of_instance_is_refused() -> None:
    """Passing the class says to instantiate it."""

    class Upper(eos.Processor):
        def process(self, record: eos.Record, ctx: eos.Context) -> None:
            pass

    assert "pass Upper()" in str(_build(Upper))


def test_async_process_on_a_processor_is_refused() -> None:
    """async def process would never be awaited: every record would be committed unprocessed."""

    class Async(eos.Processor):
        async def process(self, record: eos.Record, ctx: eos.Context) -> None:  # type: ignore[override]
            pass

    assert "async def" in str(_build(Async()))


@pytest.mark.parametrize(
    ("stores", "hint"),
    [
        ("counts", "eos.Store('counts')"),
        (["counts"], "eos.Store('counts')"),
        (eos.Store("counts"), "stores = [eos.Store('counts')]"),
        ([eos.Store("x"), eos.Store("x")], "declared twice"),
    ],
)
def test_stores_must_be_a_sequence_of_store(stores: object, hint: str) -> None:
    """stores = 'counts', ['counts'], a bare Store or duplicates: a ConfigError with the fix."""

    class P(eos.Processor):
        def process(self, record: eos.Record, ctx: eos.Context) -> None:
            pass

    p = P()
    p.stores = stores  # type: ignore[assignment]
    assert hint in str(_build(p))


def test_serde_class_instead_of_instance_is_refused() -> None:
    """key_serde=JsonSerde (the class) would fail on every record; it is refused with the fix."""

    class P(eos.Processor):
        def process(self, record: eos.Record, ctx: eos.Context) -> None:
            pass

    with pytest.raises(eos.ConfigError, match=r"pass an instance: JsonSerde\(\)"):
        eos.Application(**SETTINGS, processor=P(), key_serde=JsonSerde)  # type: ignore[arg-type]
    with pytest.raises(eos.ConfigError, match=r"pass an instance: JsonSerde\(\)"):
        eos.Store("s", value_serde=JsonSerde)  # type: ignore[arg-type]
    with pytest.raises(eos.ConfigError, match=r"pass an instance: JsonSerde\(\)"):
        TestDriver(P(), value_serde=JsonSerde)  # type: ignore[arg-type]


def test_store_name_computed_at_run_time_stops_the_driver_not_the_policy() -> None:
    """A store name only known at run time is checked when used: the TestDriver raises
    ConfigError even under the skip policy (the engine does the same; see the integration
    test), instead of skipping every record."""

    class Dynamic(eos.Processor):
        stores = [eos.Store("a")]

        def process(self, record: eos.Record, ctx: eos.Context) -> None:
            ctx.store(str(record.value))["k"] = 1

    driver = TestDriver(Dynamic(), value_serde="string", processing_error_policy="skip")
    driver.send("a")
    with pytest.raises(eos.ConfigError, match="'b' is not declared"):
        driver.send("b")
    assert driver.skipped == 0
    assert driver.store("a") == {"k": 1}
