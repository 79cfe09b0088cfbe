"""The documentation site builds strictly and its text stays inside the repository."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from doc_blocks import DOCS, ROOT

# Words that point at material outside this repository; the site must explain itself.
_FORBIDDEN = ("../shared", "/work/", "SPEC", "RELIABILITY", "issue 9", "issue 10", "issue 11")
_MAX_BUILD_SECONDS = 60


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    mkdocs = Path(sys.executable).parent / "mkdocs"
    proc = subprocess.run(
        [str(mkdocs), "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=_MAX_BUILD_SECONDS * 2,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    return out


def _nav_pages(nav: list[object]) -> list[str]:
    pages: list[str] = []
    for item in nav:
        assert isinstance(item, dict), item
        for target in item.values():
            pages += _nav_pages(target) if isinstance(target, list) else [str(target)]
    return pages


def _config() -> dict[str, object]:
    # mkdocs.yml has no custom tags, so the safe loader reads all of it.
    loaded = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_every_nav_page_is_built(site: Path) -> None:
    nav = _config()["nav"]
    assert isinstance(nav, list)
    for page in _nav_pages(nav):
        if not (DOCS / page).exists():
            assert page == "celery.md", f"nav lists {page}, which is not in docs/"
            continue
        built = site / page.removesuffix(".md") / "index.html"
        if page == "index.md":
            built = site / "index.html"
        assert built.is_file(), f"{page} was not built ({built})"


def test_every_page_is_in_the_nav() -> None:
    nav = _config()["nav"]
    assert isinstance(nav, list)
    listed = set(_nav_pages(nav))
    pages = {p.name for p in DOCS.glob("*.md")}
    assert pages <= listed, f"pages missing from the nav in mkdocs.yml: {sorted(pages - listed)}"


def test_api_reference_has_the_public_names(site: Path) -> None:
    html = (site / "api" / "index.html").read_text(encoding="utf-8")
    for name in (
        "ebind.App",
        "ebind.Task",
        "ebind.RetryPolicy",
        "ebind.workflow.DAG",
        "ebind.workflow.Workflow",
        "ebind.errors.TaskFailed",
        "ebind.sync.SyncResult",
        "ebind.testing.running_worker",
        "ebind.contrib.prometheus.PrometheusMetrics",
        "ebind.contrib.otel.instrument_app",
        "ebind.contrib.fernet.FernetCodec",
    ):
        assert f'id="{name}"' in html, f"the API reference has no entry for {name}"


def test_cli_reference_lists_every_command(site: Path) -> None:
    from ebind.cli import main
    from tools.cli_reference import command_names

    html = (site / "cli" / "index.html").read_text(encoding="utf-8")
    for name in command_names(main):
        assert f"<code>{name}</code>" in html, f"the CLI page has no section for `{name}`"
    assert "<!-- cli-reference -->" not in html


def test_site_names_nothing_outside_the_repository(site: Path) -> None:
    for page in site.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        for word in _FORBIDDEN:
            assert word not in text, f"{page.relative_to(site)} contains {word!r}"


def test_pages_load_nothing_from_outside(site: Path) -> None:
    """Styles, scripts and fonts come with the site, so it reads the same offline."""
    remote = re.compile(r'<(?:link|script|img)\b[^>]*\b(?:href|src)="(?:https?:)?//')
    for page in site.rglob("*.html"):
        found = remote.search(page.read_text(encoding="utf-8"))
        assert found is None, f"{page.relative_to(site)} loads {found.group(0) if found else ''}"


def test_snippet_markers_do_not_leak(site: Path) -> None:
    for page in site.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        assert "--8&lt;--" not in text, f"{page.relative_to(site)} shows a snippet marker"


def test_page_text_names_no_requirement_codes(site: Path) -> None:
    """Codes such as "G5" or "§4" point at documents readers do not have; say the reason."""
    article = re.compile(r"<article[^>]*>(.*?)</article>", re.DOTALL)
    code = re.compile(r"\b[GH]\d{1,2}\b|§")
    for page in site.rglob("*.html"):
        for body in article.findall(page.read_text(encoding="utf-8")):
            text = re.sub(r"<[^>]+>", " ", body)
            found = code.findall(text)
            assert not found, f"{page.relative_to(site)} names requirement codes: {found}"


def test_page_text_links_only_inside_the_site(site: Path) -> None:
    article = re.compile(r"<article[^>]*>(.*?)</article>", re.DOTALL)
    href = re.compile(r'href="([^"]+)"')
    for page in site.rglob("*.html"):
        for body in article.findall(page.read_text(encoding="utf-8")):
            for link in href.findall(body):
                assert not re.match(r"[a-z]+:", link), (
                    f"{page.relative_to(site)} links outside the repository: {link}"
                )
