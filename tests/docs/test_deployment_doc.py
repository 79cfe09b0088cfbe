"""The deployment page's files are checked on paper: they parse, and every command exists."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from doc_blocks import DOCS, blocks, parse_command

from ebind._embed_proc import server_binary

PAGE = DOCS / "deployment.md"


def _yaml_docs() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for block in blocks(PAGE):
        if block.lang == "yaml":
            docs += [d for d in yaml.safe_load_all(block.text) if d is not None]
    return docs


def _check_nats_conf(text: str, tmp_path: Path, env: dict[str, str] | None = None) -> None:
    conf = tmp_path / "nats.conf"
    conf.write_text(text, encoding="utf-8")
    proc = subprocess.run(
        [server_binary(), "-t", "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, f"nats-server refuses the config:\n{text}\n{proc.stderr}"


def _parses(argv: list[str]) -> None:
    try:
        parse_command(argv)
    except click.UsageError as exc:
        pytest.fail(f"`{shlex.join(argv)}` is not accepted: {exc.format_message()}")


def test_nats_conf_is_valid(tmp_path: Path) -> None:
    confs = [b.text for b in blocks(PAGE) if 'title="nats.conf"' in b.info]
    assert len(confs) == 1, "the page lost its nats.conf"
    _check_nats_conf(confs[0], tmp_path)
    assert len(re.findall(r"nats-route://", confs[0])) == 3, "a cluster of three lists three routes"


def test_kubernetes_config_map_is_valid(tmp_path: Path) -> None:
    maps = [d for d in _yaml_docs() if d.get("kind") == "ConfigMap"]
    assert len(maps) == 1
    _check_nats_conf(maps[0]["data"]["nats.conf"], tmp_path, {"POD_NAME": "nats-0"})


def test_kubernetes_objects_are_consistent() -> None:
    objects = {(d["kind"], d["metadata"]["name"]): d for d in _yaml_docs() if "kind" in d}
    nats = objects[("StatefulSet", "nats")]
    assert nats["spec"]["replicas"] == 3
    assert nats["spec"]["serviceName"] == objects[("Service", "nats")]["metadata"]["name"]
    worker = objects[("Deployment", "ebind-worker")]["spec"]["template"]["spec"]
    (container,) = worker["containers"]
    grace = float(container["command"][container["command"].index("--shutdown-grace") + 1])
    assert worker["terminationGracePeriodSeconds"] > grace, (
        "Kubernetes would kill a draining worker"
    )
    port = int(container["command"][container["command"].index("--health-port") + 1])
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": port}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port}


def test_compose_has_three_clustered_nodes() -> None:
    (compose,) = [d for d in _yaml_docs() if "services" in d]
    services = compose["services"]
    nodes = [name for name in services if name.startswith("nats-")]
    assert nodes == ["nats-1", "nats-2", "nats-3"]
    for name in nodes:
        command = services[name]["command"]
        assert command[command.index("--name") + 1] == name
        routes = command[command.index("--routes") + 1].split(",")
        assert routes == [f"nats://{n}:6222" for n in nodes]


def _ebind_commands() -> list[list[str]]:
    """Every ebind command line of the page: compose/k8s lists and systemd ExecStart lines."""
    found: list[list[str]] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "command" and isinstance(value, list) and value[:1] == ["ebind"]:
                    found.append([str(v) for v in value])
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(_yaml_docs())
    for block in blocks(PAGE):
        for line in block.text.splitlines():
            if line.startswith("ExecStart=") and "ebind" in line:
                argv = shlex.split(line.removeprefix("ExecStart="))
                found.append(["ebind", *argv[1:]])
    return found


def test_every_ebind_command_on_the_page_parses() -> None:
    commands = _ebind_commands()
    assert len(commands) >= 4, commands
    for argv in commands:
        _parses(argv)


def test_systemd_stop_timeout_outlasts_the_grace() -> None:
    (unit,) = [b.text for b in blocks(PAGE) if "ebind worker" in b.text and b.lang == "ini"]
    grace = re.search(r"--shutdown-grace (\d+)", unit)
    stop = re.search(r"TimeoutStopSec=(\d+)", unit)
    assert grace and stop, unit
    assert float(stop.group(1)) > float(grace.group(1))
