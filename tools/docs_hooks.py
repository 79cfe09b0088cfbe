"""mkdocs hooks: the CLI reference from click, and pages written on other branches.

Listed under ``hooks:`` in mkdocs.yml; mkdocs imports this file by path.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # mkdocs loads hooks by path, so `tools` is not importable yet
    sys.path.insert(0, str(ROOT))

from tools.cli_reference import MARKER, render  # noqa: E402

log = logging.getLogger("mkdocs.hooks.ebind")

# Pages the nav lists that a checkout may lack; a missing one is left out of the nav with
# a note instead of failing the strict build.
PENDING_PAGES = frozenset({"celery.md"})


def _prune(nav: list[Any], docs_dir: Path) -> list[Any]:
    """The nav without the pending pages that are not in docs_dir yet."""
    kept: list[Any] = []
    for item in nav:
        if isinstance(item, dict):
            ((title, target),) = item.items()
            if isinstance(target, list):
                kept.append({title: _prune(target, docs_dir)})
                continue
            if target in PENDING_PAGES and not (docs_dir / target).exists():
                log.info("nav: %s is not in docs/ yet; left out", target)
                continue
        kept.append(item)
    return kept


def on_config(config: Any) -> Any:
    """Leave pending pages out of the nav while they are missing."""
    config["nav"] = _prune(config["nav"], Path(config["docs_dir"]))
    return config


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    """Expand the CLI reference marker in cli.md."""
    if MARKER in markdown:
        return markdown.replace(MARKER, render())
    return markdown
