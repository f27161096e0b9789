"""Programming errors in a processor, caught when the application is built.

A mistake in how a processor is written is not a poison record: left to run,
it would fail on every record and ``processing_error_policy`` would skip or
dead-letter all of them. :func:`check_processor` finds the common ones before
anything is consumed and raises a :class:`~eos.errors.ConfigError` that says
what to write instead. The ``Application`` and the ``TestDriver`` both call it.

Checked: the processor is an ``eos.Processor`` instance (not its class), it
implements ``process`` (an ``eos.BatchProcessor``: ``process_batch``, and not
``process``, which is its batch of one), its hooks are plain functions (eos never awaits a
coroutine), ``stores`` is a sequence of ``eos.Store`` with no name reserved
for eos's own stores, and every
``ctx.store("name")`` with a literal name in the class's source names a
declared store. Names computed at run time are checked when used
(``ctx.store`` raises ConfigError for an undeclared name, which stops the
instance instead of being treated as a record error).
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Iterator, Sequence

from eos._time_store import RESERVED_PREFIX
from eos.batching import BatchProcessor
from eos.errors import ConfigError
from eos.processor import AsyncProcessor, Processor
from eos.state.base import Store
from eos.state.global_table import GlobalStore

__all__ = ["check_processor"]

_HOOKS = ("process", "process_batch", "on_assign", "on_revoke", "on_timer", "close")


def check_processor(processor: object) -> None:
    """Raise ConfigError if ``processor`` cannot work; see the module docstring."""
    if isinstance(processor, type):
        if issubclass(processor, Processor):
            raise ConfigError(
                f"processor is the class {processor.__name__}, not an instance: "
                f"pass {processor.__name__}()",
                "processor",
            )
        raise ConfigError(f"processor must be an eos.Processor, not {processor!r}", "processor")
    if not isinstance(processor, Processor):
        raise ConfigError(
            f"processor must be an eos.Processor instance, not {type(processor).__name__}: "
            "subclass eos.Processor and implement process(self, record, ctx)",
            "processor",
        )
    cls = type(processor)
    name = cls.__name__
    if isinstance(processor, BatchProcessor):
        if type(processor).process_batch is BatchProcessor.process_batch:
            raise ConfigError(
                f"{name} does not implement process_batch(self, batch, ctx); eos calls it once "
                "per run of one partition's records (an eos.BatchProcessor's process is that "
                "call for one record)",
                "processor",
            )
        if cls.process is not BatchProcessor.process:
            raise ConfigError(
                f"{name} is an eos.BatchProcessor and overrides process: eos calls "
                "process_batch, and process(record) only as process_batch of that one record, "
                "so the two would disagree. Put the logic in process_batch alone",
                "processor",
            )
    if cls.process in (Processor.process, AsyncProcessor.process):
        prefix = "async " if isinstance(processor, AsyncProcessor) else ""
        raise ConfigError(
            f"{name} does not implement {prefix}process(self, record, ctx); eos calls it once "
            "per input record",
            "processor",
        )
    if isinstance(processor, AsyncProcessor):
        if not inspect.iscoroutinefunction(cls.process):
            raise ConfigError(
                f"{name} is an eos.AsyncProcessor, so its process must be an async def "
                "(subclass eos.Processor for a plain def process)",
                "processor",
            )
        declared = _check_stores(name, processor.stores)
        _check_store_names(cls, declared)
        return
    for hook in _HOOKS:
        function = getattr(cls, hook, None)
        if inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function):
            raise ConfigError(
                f"{name}.{hook} is an async def: eos calls an eos.Processor's hooks "
                f"synchronously and would never await it (the record would be committed "
                f"unprocessed). Subclass eos.AsyncProcessor instead (see docs/async.md), or "
                f"make {hook} a plain def",
                "processor",
            )
    declared = _check_stores(name, processor.stores)
    _check_store_names(cls, declared)


def _check_stores(name: str, stores: object) -> set[str]:
    if isinstance(stores, (str, bytes, Store)) or not isinstance(stores, Sequence):
        raise ConfigError(
            f"{name}.stores must be a list of eos.Store, not {type(stores).__name__} "
            f"({stores!r}); write stores = [eos.Store('counts')]",
            "stores",
        )
    names: set[str] = set()
    for item in stores:
        if not isinstance(item, (Store, GlobalStore)):
            hint = f"eos.Store({item!r})" if isinstance(item, str) else "eos.Store('name')"
            raise ConfigError(
                f"{name}.stores holds {item!r} ({type(item).__name__}); each entry must be an "
                f"eos.Store: write {hint}",
                "stores",
            )
        if item.name.startswith(RESERVED_PREFIX):
            raise ConfigError(
                f"store name {item.name!r} in {name}.stores: names starting with "
                f"{RESERVED_PREFIX!r} are eos's own (its stream time and timers); choose another",
                "store.name",
            )
        if item.name in names:
            raise ConfigError(
                f"store name {item.name!r} is declared twice in {name}.stores; store names "
                "must be unique",
                "store.name",
            )
        names.add(item.name)
    return names


def _check_store_names(cls: type, declared: set[str]) -> None:
    """Every ``ctx.store("literal")`` in the class body names a declared store."""
    for used, method in _literal_store_names(cls):
        if used not in declared:
            have = ", ".join(sorted(map(repr, declared))) or "none"
            raise ConfigError(
                f"{cls.__name__}.{method} uses ctx.store({used!r}) but {cls.__name__}.stores "
                f"declares {have}; add eos.Store({used!r}) to stores",
                "stores",
            )


def _literal_store_names(cls: type) -> Iterator[tuple[str, str]]:
    """``(name, method)`` for each ``<ctx>.store("name")`` call in the class's own source."""
    for klass in cls.__mro__:
        if klass is Processor or klass is object or klass.__module__.startswith("eos."):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue  # no source (built dynamically, or a compiled module)
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            contexts = {"ctx", "context"}
            params = [a.arg for a in node.args.args]
            if node.name == "process" and len(params) >= 3:
                contexts.add(params[2])
            for call in ast.walk(node):
                if (
                    isinstance(call, ast.Call)
                    and isinstance(call.func, ast.Attribute)
                    and call.func.attr == "store"
                    and isinstance(call.func.value, ast.Name)
                    and call.func.value.id in contexts
                    and len(call.args) == 1
                    and isinstance(call.args[0], ast.Constant)
                    and isinstance(call.args[0].value, str)
                ):
                    yield call.args[0].value, node.name
