"""MkDocs hooks of the documentation site (mkdocs.yml ``hooks:``).

eos's docstrings cross-reference in Sphinx's style (``:class:`~eos.errors.ConfigError```),
which mkdocstrings renders as the role's name followed by the code. This hook drops the
role and, as Sphinx does for a leading ``~``, shows only the last part of the name.
"""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:class|func|meth|attr|data|mod|exc|obj|const):<code>(~?)([^<]*)</code>")


def _shown(match: re.Match[str]) -> str:
    tilde, name = match.group(1), match.group(2)
    return f"<code>{name.rsplit('.', 1)[-1] if tilde else name}</code>"


def on_page_content(html: str, **_kwargs: Any) -> str:
    """Every page's HTML, with Sphinx roles turned into plain code."""
    return _ROLE.sub(_shown, html)
