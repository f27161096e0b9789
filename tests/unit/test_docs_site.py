"""The documentation site builds with ``mkdocs build --strict``, its links hold, and its
API reference documents every name ``eos`` exports.

One build (a few seconds) serves every test here.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import eos

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

# mkdocs.yml reports links to files outside docs/ at INFO (not a warning, so strict
# mode lets them through); the test below checks each of them instead.
_OUTSIDE_LINK = re.compile(
    r"Doc file '(?P<page>[^']+)' contains a link '(?P<link>[^']+)', "
    r"but the target (?:'[^']+' )?is not found among documentation files"
)


@dataclass(frozen=True)
class Build:
    """What one ``mkdocs build --strict`` printed and produced."""

    returncode: int
    output: str
    site: Path


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Build:
    site = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    return Build(proc.returncode, proc.stdout + proc.stderr, site)


def test_the_site_builds_in_strict_mode(build: Build) -> None:
    """``mkdocs build --strict`` succeeds: no page outside the nav, no nav entry or link to
    a missing page, no missing anchor, no mkdocstrings reference that fails to resolve."""
    assert build.returncode == 0, build.output[-6000:]
    assert (build.site / "index.html").is_file()
    assert (build.site / "concepts" / "index.html").is_file()
    assert (build.site / "troubleshooting" / "index.html").is_file()


def test_links_to_files_outside_docs_point_at_files_of_the_repository(build: Build) -> None:
    """Every link MkDocs could not resolve inside docs/ leaves docs/ and names a file of this
    repository (``../examples/word_count.py``), so a mistyped page or path still fails."""
    broken = []
    for match in _OUTSIDE_LINK.finditer(build.output):
        page, link = match["page"], match["link"]
        path = link.split("#", 1)[0].split("?", 1)[0]
        target = (DOCS / page).parent.joinpath(path).resolve()
        inside_docs = target == DOCS or DOCS in target.parents
        if inside_docs or not target.is_file() or ROOT not in target.parents:
            broken.append(f"{page}: {link}")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_api_reference_documents_every_exported_name(build: Build) -> None:
    """Each name of ``eos.__all__`` (but the module ``errors`` and ``__version__``) has an
    entry in the generated API reference, under the path of a module that holds it."""
    pages = "\n".join(p.read_text() for p in (build.site / "api").rglob("*.html"))
    ids = set(re.findall(r'id="(eos(?:\.\w+)+)"', pages))
    missing = []
    for name in eos.__all__:
        if name in ("errors", "__version__"):
            continue
        obj = getattr(eos, name)
        if not any(_documents(anchor, name, obj) for anchor in ids):
            missing.append(f"{name} (defined in {obj.__module__})")
    assert not missing, f"not in the API reference: {missing}"


def _documents(anchor: str, name: str, obj: object) -> bool:
    """Whether the API reference's ``anchor`` (``eos.dsl.Table``) is the entry of ``obj``."""
    module, _, last = anchor.rpartition(".")
    if last != name:
        return False
    try:
        return getattr(importlib.import_module(module), name, None) is obj
    except ImportError:
        return False
