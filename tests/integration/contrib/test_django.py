"""ebind.contrib.django in a real Django process: discovery, settings, setup (subprocesses).

Django's settings and app registry are process-wide, so each case runs in its own
interpreter against a small project written to tmp_path.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SETTINGS = """
SECRET_KEY = "test"
INSTALLED_APPS = ["ebind.contrib.django", {apps}]
DATABASES = {{}}
EBIND = {ebind}
"""


def _project(root: Path, *, apps: list[str], ebind: str = "{'NAME': 'proj'}") -> None:
    (root / "proj").mkdir()
    (root / "proj" / "__init__.py").write_text("")
    names = ", ".join(repr(a) for a in apps)
    (root / "proj" / "settings.py").write_text(SETTINGS.format(apps=names, ebind=ebind))
    (root / "proj" / "ebind_app.py").write_text(
        "from ebind.contrib.django import app_from_settings, setup\n"
        "app = app_from_settings('proj.settings')\n"
        "setup()\n"
    )
    for name in apps:
        (root / name).mkdir()
        (root / name / "__init__.py").write_text("")


def _tasks(root: Path, app_name: str, body: str) -> None:
    (root / app_name / "tasks.py").write_text(textwrap.dedent(body))


# Keeps stdout for the program's own report whatever the library's logging defaults are.
QUIET = "import ebind.logging\nebind.logging.configure(level='warning')\n"


def _run(root: Path, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", QUIET + textwrap.dedent(code)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)},
    )


LOAD_AND_REPORT = """
    import json
    from proj.ebind_app import app
    from ebind.contrib.django import autodiscover
    names = sorted(app.registry.names())
    print(json.dumps({"name": app.name, "servers": app.servers, "tasks": names,
                      "again": autodiscover()}))
"""


def test_loading_the_app_discovers_every_installed_apps_tasks(tmp_path: Path) -> None:
    _project(tmp_path, apps=["alpha", "beta", "gamma"])
    _tasks(
        tmp_path,
        "alpha",
        """
        from proj.ebind_app import app

        @app.task(name="alpha.double")
        def double(x: int) -> int:
            return 2 * x
        """,
    )
    _tasks(
        tmp_path,
        "gamma",
        """
        from proj.ebind_app import app

        @app.task(name="gamma.hello")
        async def hello(who: str) -> str:
            return "hi " + who
        """,
    )
    proc = _run(tmp_path, LOAD_AND_REPORT)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["name"] == "proj"
    assert out["tasks"] == ["alpha.double", "gamma.hello"]  # beta has no tasks.py: skipped
    assert out["again"] == ["alpha.tasks", "gamma.tasks"]


def test_nats_url_from_settings(tmp_path: Path) -> None:
    _project(tmp_path, apps=["alpha"], ebind="{'NATS_URL': 'nats://127.0.0.1:4999'}")
    proc = _run(tmp_path, LOAD_AND_REPORT)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["servers"] == ["nats://127.0.0.1:4999"]


def test_a_broken_tasks_module_is_not_swallowed(tmp_path: Path) -> None:
    _project(tmp_path, apps=["alpha"])
    _tasks(tmp_path, "alpha", "raise RuntimeError('alpha/tasks.py is broken')\n")
    proc = _run(tmp_path, LOAD_AND_REPORT)
    assert proc.returncode != 0
    assert "RuntimeError: alpha/tasks.py is broken" in proc.stderr


def test_a_missing_import_inside_tasks_is_not_taken_for_a_missing_module(tmp_path: Path) -> None:
    _project(tmp_path, apps=["alpha"])
    _tasks(tmp_path, "alpha", "import no_such_dependency_xyz\n")
    proc = _run(tmp_path, LOAD_AND_REPORT)
    assert proc.returncode != 0
    assert "No module named 'no_such_dependency_xyz'" in proc.stderr


def test_bad_settings_fail_with_the_setting_named(tmp_path: Path) -> None:
    _project(tmp_path, apps=["alpha"], ebind="{'REPLICAS': 'three'}")
    proc = _run(tmp_path, LOAD_AND_REPORT)
    assert proc.returncode != 0
    assert (
        "SettingsError: settings.EBIND['REPLICAS'] must be an integer, got 'three'" in proc.stderr
    )


def test_setup_is_a_no_op_once_django_is_set_up(tmp_path: Path) -> None:
    _project(tmp_path, apps=["alpha"])
    _tasks(
        tmp_path,
        "alpha",
        """
        from proj.ebind_app import app
        IMPORTS = globals().setdefault("IMPORTS", 0) + 1

        @app.task(name="alpha.t")
        def t() -> None:
            return None
        """,
    )
    proc = _run(
        tmp_path,
        """
        import django, os
        os.environ["DJANGO_SETTINGS_MODULE"] = "proj.settings"
        django.setup()
        from ebind.contrib.django import setup
        setup("other.settings")
        import alpha.tasks
        print(os.environ["DJANGO_SETTINGS_MODULE"], alpha.tasks.IMPORTS)
        """,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["proj.settings", "1"]


def test_missing_django_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import ebind.contrib.django as contrib

    for name in [m for m in sys.modules if m == "django" or m.startswith("django.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "django", None)
    monkeypatch.setitem(sys.modules, "django.conf", None)
    with pytest.raises(
        ImportError, match=r"ebind\.contrib\.django needs Django: pip install django"
    ):
        contrib.app_from_settings()
    monkeypatch.undo()
    importlib.import_module("django.conf")
