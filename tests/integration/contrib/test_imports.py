"""contrib modules name the extra to install when their dependency is missing."""

from __future__ import annotations

import importlib
import sys

import pytest


@pytest.mark.parametrize(
    ("module", "hidden", "extra"),
    [
        ("ebind.contrib.prometheus", "prometheus_client", "ebind-nats[prometheus]"),
        ("ebind.contrib.otel", "opentelemetry", "ebind-nats[otel]"),
    ],
)
def test_missing_dependency_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, module: str, hidden: str, extra: str
) -> None:
    for name in list(sys.modules):
        if name == hidden or name.startswith(hidden + "."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, hidden, None)  # "import hidden" now raises ImportError
    monkeypatch.delitem(sys.modules, module, raising=False)
    with pytest.raises(ImportError, match=extra.replace("[", r"\[").replace("]", r"\]")):
        importlib.import_module(module)
    monkeypatch.undo()
    importlib.import_module(module)  # and imports fine with the dependency back
