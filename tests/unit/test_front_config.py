"""Settings from objects, mappings and the environment (pure parsing and application)."""

from __future__ import annotations

import types
from typing import Any

import pytest

from ebind.app import App
from ebind.config import (
    DEFAULT_CONNECT_WAIT,
    SETTINGS,
    connect_wait_setting,
    load_object,
    parse_settings,
    settings_of,
)
from ebind.errors import InvalidArguments
from ebind.retention import Retention


def test_every_section_is_covered_by_names_matching_the_environment() -> None:
    assert {"nats_url", "connect_wait", "publish_timeout", "nats_user", "nats_tls_ca"} <= set(
        SETTINGS
    )
    assert {f"retention_{f}" for f in Retention.__struct_fields__} <= set(SETTINGS)
    assert {"worker_concurrency", "worker_ack_wait", "worker_claims"} <= set(SETTINGS)


def test_parse_accepts_any_case_and_the_prefix_or_none() -> None:
    s = parse_settings(
        {
            "EBIND_NATS_URL": "nats://h:4222",
            "worker_concurrency": "8",
            "EBIND_WORKER_PREFETCH": "2",
            "Worker_Ack_Wait": "1m",
            "retention_results": "2d",
            "EBIND_WORKER_CLAIMS": "gpu, eu-1",
            "worker_scheduler": "false",
            "nats_token": "s3cret-token",
            "connect_wait": 0,
            "worker_health_port": None,  # None counts as not given
        }
    )
    assert s.app == {"nats_url": "nats://h:4222", "connect_wait": 0.0}
    assert s.worker == {
        "concurrency": 8,
        "prefetch": 2,
        "ack_wait": 60.0,
        "claims": ["gpu", "eu-1"],
        "scheduler": False,
    }
    assert s.retention == {"results": 2 * 86400.0}
    assert s.connection == {"token": "s3cret-token"}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"EBIND_WORKER_CONCURENCY": 4}, "unknown ebind setting(s) ['EBIND_WORKER_CONCURENCY']"),
        ({"worker_concurrency": 0}, "EBIND_WORKER_CONCURRENCY must be a whole number >= 1"),
        ({"worker_concurrency": True}, "EBIND_WORKER_CONCURRENCY must be a whole number"),
        ({"worker_prefetch": "0"}, "EBIND_WORKER_PREFETCH must be a whole number >= 1"),
        ({"worker_ack_wait": "soon"}, "EBIND_WORKER_ACK_WAIT"),
        ({"worker_ack_wait": -1}, "EBIND_WORKER_ACK_WAIT must be a finite duration >= 0"),
        ({"worker_scheduler": "maybe"}, "EBIND_WORKER_SCHEDULER must be true or false"),
        ({"worker_health_port": 70000}, "EBIND_WORKER_HEALTH_PORT must be a port number"),
        ({"nats_url": ""}, "EBIND_NATS_URL must be a non-empty string"),
        ({"worker_claims": 5}, "EBIND_WORKER_CLAIMS must be a list of names"),
        ({"connect_wait": float("inf")}, "EBIND_CONNECT_WAIT must be a finite duration"),
    ],
)
def test_parse_names_the_bad_setting(values: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArguments) as info:
        parse_settings(values)
    assert message in str(info.value)


def test_unknown_names_are_ignored_when_not_strict() -> None:
    assert parse_settings({"EBIND_SIGNING_KEYS": "x"}, strict=False).worker == {}


def test_settings_of_an_object_reads_only_prefixed_attributes() -> None:
    mod = types.SimpleNamespace(EBIND_WORKER_CONCURRENCY=3, DEBUG=True, SECRET_KEY="x")
    assert dict(settings_of(mod)) == {"EBIND_WORKER_CONCURRENCY": 3}
    assert settings_of({"a": 1}) == {"a": 1}


def test_load_object_imports_modules_and_attributes() -> None:
    assert load_object("ebind.config:PREFIX") == "EBIND_"
    assert load_object(obj := object()) is obj
    with pytest.raises(InvalidArguments, match="cannot import settings module 'no_such_mod_x'"):
        load_object("no_such_mod_x")
    with pytest.raises(InvalidArguments, match="has no attribute 'NOPE'"):
        load_object("ebind.config:NOPE")


def test_connect_wait_default_env_and_explicit() -> None:
    assert connect_wait_setting(None, {}) == DEFAULT_CONNECT_WAIT
    assert connect_wait_setting(None, {"EBIND_CONNECT_WAIT": "90s"}) == 90.0
    assert connect_wait_setting(2.5, {"EBIND_CONNECT_WAIT": "90s"}) == 2.5
    with pytest.raises(InvalidArguments, match="connect_wait"):
        connect_wait_setting(-1)


def test_config_from_object_sets_connection_retention_and_worker_options() -> None:
    app = App("cfg")
    app.config_from_object(
        {
            "EBIND_NATS_URL": "nats://a:4222,nats://b:4222",
            "EBIND_CONNECT_WAIT": "45s",
            "EBIND_PUBLISH_TIMEOUT": 2,
            "EBIND_RETENTION_TASKS": "1d",
            "EBIND_WORKER_CONCURRENCY": 4,
            "EBIND_NATS_USER": "ann",
            "EBIND_NATS_PASSWORD": "pw-long-enough",
        }
    )
    assert app.servers == ["nats://a:4222", "nats://b:4222"]
    assert app.connect_wait == 45.0 and app.publish_timeout == 2.0
    assert app.retention.tasks == 86400.0
    assert app.retention.results == Retention().results  # untouched
    assert app.worker_options == {"concurrency": 4}
    assert app._options["user"] == "ann" and app._options["password"] == "pw-long-enough"
    worker = app.worker(ack_wait=3.0)
    assert worker.concurrency == 4 and worker.ack_wait == 3.0


def test_config_from_a_module_path() -> None:
    app = App("cfg-mod")
    app.config_from_object("cfg_settings_sample")
    assert app.worker_options == {"concurrency": 2, "claims": ["reports"]}


def test_config_from_env_reads_only_known_names() -> None:
    app = App("cfg-env")
    app.config_from_env(
        {
            "EBIND_WORKER_SHUTDOWN_GRACE": "5",
            "EBIND_SIGNING_KEYS": "ignored-here",
            "EBIND_WORKER_CONCURRENCY": "",  # empty counts as unset
            "HOME": "/root",
        }
    )
    assert app.worker_options == {"shutdown_grace": 5.0}


def test_a_bad_value_changes_nothing_it_was_given_with() -> None:
    app = App("cfg-bad")
    with pytest.raises(InvalidArguments, match="EBIND_WORKER_CONCURRENCY"):
        app.config_from_object({"EBIND_NATS_URL": "nats://x:1", "EBIND_WORKER_CONCURRENCY": -2})
    assert app.servers != ["nats://x:1"] and app.worker_options == {}


def test_publish_timeout_must_be_positive() -> None:
    with pytest.raises(InvalidArguments, match="EBIND_PUBLISH_TIMEOUT must be > 0"):
        App("cfg-pt").config_from_object({"publish_timeout": 0})


def test_hooks_and_middleware_are_registered_on_the_app() -> None:
    app = App("hooks")

    @app.on_worker_startup
    def opened(worker: Any) -> None: ...

    @app.on_worker_shutdown
    async def closed(worker: Any) -> None: ...

    assert app.worker_hooks.startup == [opened] and app.worker_hooks.shutdown == [closed]
    with pytest.raises(InvalidArguments, match="a worker hook must be callable"):
        app.on_worker_startup(3)  # type: ignore[type-var]


def test_the_process_pool_settings_become_the_workers_pool_options() -> None:
    s = parse_settings({"EBIND_WORKER_POOL": " Process ", "worker_pool_size": "3"})
    assert s.worker == {"pool": "process", "processes": 3}
    with pytest.raises(InvalidArguments, match="EBIND_WORKER_POOL must be 'thread' or 'process'"):
        parse_settings({"worker_pool": "fork"})
    with pytest.raises(InvalidArguments, match="EBIND_WORKER_POOL_SIZE must be a whole number"):
        parse_settings({"worker_pool_size": 0})
