"""The README, the docs snippets and the older pages' inline samples pass mypy --strict."""

from __future__ import annotations

from pathlib import Path

import pytest
from doc_blocks import (
    DOCS,
    GUIDE_PAGES,
    PAGES,
    PYTHON_LANGS,
    ROOT,
    RUN_PAGES,
    SNIPPETS,
    TYPECHECKED_PAGES,
    blocks,
)
from mypy import api as mypy_api


def _readme_module() -> str:
    """The README's python blocks joined in order: later blocks use names of earlier ones."""
    parts = [b.text for b in blocks(ROOT / "README.md") if b.lang == "python"]
    assert len(parts) >= 3, "the README lost its python samples"
    return "\n\n".join(parts)


def _page_module(page: str) -> str:
    """A page's python blocks joined in order, as one module: later blocks use earlier names."""
    parts = [b.text for b in blocks(DOCS / page) if b.lang in PYTHON_LANGS]
    assert parts, f"{page} has no python samples left; drop it from TYPECHECKED_PAGES"
    return "\n\n".join(parts)


def _unchecked(page: Path) -> bool:
    """True when ``page`` has a python block that no documentation test runs or type-checks."""
    has_python = any(b.lang in PYTHON_LANGS for b in blocks(page))
    return has_python and page.name not in (*GUIDE_PAGES, *TYPECHECKED_PAGES, *RUN_PAGES)


def test_the_check_sees_a_new_page_and_an_indented_block(tmp_path: Path) -> None:
    page = tmp_path / "new-page.md"
    page.write_text("# New\n\n- a list item:\n\n  ```python\n  x = 1\n  ```\n", encoding="utf-8")
    assert _unchecked(page)
    assert [b.text for b in blocks(page)] == ["x = 1\n"]
    page.write_text("# New\n\n```console\n$ ebind server\n```\n", encoding="utf-8")
    assert not _unchecked(page)


@pytest.mark.parametrize("page", PAGES)
def test_every_python_block_is_checked(page: str) -> None:
    """A python block on any page is run or type-checked, so a new one cannot go stale unseen."""
    assert not _unchecked(DOCS / page), (
        f"{page} has a python block no test checks: add the page to TYPECHECKED_PAGES in "
        "tests/docs/doc_blocks.py (its blocks then form one module for mypy --strict), or "
        "move the sample into docs/snippets/"
    )


@pytest.mark.timeout(300)
def test_readme_and_snippets_type_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MYPYPATH", str(SNIPPETS / "quickstart"))  # send.py imports `tasks`
    readme = tmp_path / "readme_samples.py"
    readme.write_text(_readme_module(), encoding="utf-8")
    pages = []
    for page in TYPECHECKED_PAGES:
        module = tmp_path / f"page_{page.removesuffix('.md').replace('-', '_')}.py"
        module.write_text(_page_module(page), encoding="utf-8")
        pages.append(str(module))
    files = [str(readme), *pages, *(str(p) for p in sorted(SNIPPETS.rglob("*.py")))]
    stdout, stderr, status = mypy_api.run(
        [
            "--strict",
            "--no-error-summary",
            "--explicit-package-bases",
            "--cache-dir",
            str(ROOT / ".mypy_cache"),
            "--config-file",
            str(ROOT / "pyproject.toml"),
            *files,
        ]
    )
    assert status == 0, f"mypy found problems in the documented samples:\n{stdout}{stderr}"
