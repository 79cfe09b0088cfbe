"""README samples and the docs snippets pass mypy --strict, as the package itself does."""

from __future__ import annotations

from pathlib import Path

import pytest
from doc_blocks import ROOT, SNIPPETS, blocks
from mypy import api as mypy_api


def _readme_module() -> str:
    """The README's python blocks joined in order: later blocks use names of earlier ones."""
    parts = [b.text for b in blocks(ROOT / "README.md") if b.lang == "python"]
    assert len(parts) >= 3, "the README lost its python samples"
    return "\n\n".join(parts)


@pytest.mark.timeout(300)
def test_readme_and_snippets_type_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MYPYPATH", str(SNIPPETS / "quickstart"))  # send.py imports `tasks`
    readme = tmp_path / "readme_samples.py"
    readme.write_text(_readme_module(), encoding="utf-8")
    files = [str(readme), *(str(p) for p in sorted(SNIPPETS.rglob("*.py")))]
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
