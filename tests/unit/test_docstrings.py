"""The examples in eos's docstrings run, so they cannot rot."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest

import eos


def _modules_with_examples() -> list[str]:
    root = Path(eos.__file__).parent
    names = []
    for info in pkgutil.walk_packages([str(root)], prefix="eos."):
        path = root.joinpath(*info.name.split(".")[1:])
        source = path / "__init__.py" if info.ispkg else path.with_suffix(".py")
        if ">>>" in source.read_text():
            names.append(info.name)
    return names


def test_the_dsl_module_has_doctests() -> None:
    """The collection below finds eos.dsl's module example (it is not silently skipped)."""
    assert "eos.dsl" in _modules_with_examples()


@pytest.mark.parametrize("name", _modules_with_examples())
def test_docstring_examples_run(name: str) -> None:
    """Every ``>>>`` example in the module's docstrings gives the output it shows."""
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
