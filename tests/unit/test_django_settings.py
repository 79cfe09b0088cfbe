"""The pure part of ebind.contrib.django: Django settings → App options, task module names."""

from __future__ import annotations

from typing import Any

import pytest

from ebind.contrib.django import SETTING_KEYS, SettingsError, app_options, task_modules


def test_nothing_set_gives_no_options() -> None:
    assert app_options() == {}


def test_every_key_maps_to_its_app_argument() -> None:
    settings = {
        "NAME": "shop",
        "NATS_URL": ["nats://a:4222", "nats://b:4222"],
        "CLIENT_ID": "web-1",
        "REPLICAS": 3,
        "PUBLISH_TIMEOUT": 2.5,
    }
    assert app_options(settings) == {
        "name": "shop",
        "nats_url": ["nats://a:4222", "nats://b:4222"],
        "client_id": "web-1",
        "replicas": 3,
        "publish_timeout": 2.5,
    }
    assert set(SETTING_KEYS) == set(settings)


def test_top_level_nats_url_alone() -> None:
    assert app_options(nats_url="nats://h:4222") == {"nats_url": "nats://h:4222"}


def test_top_level_nats_url_agreeing_with_the_dict() -> None:
    got = app_options({"NATS_URL": "nats://h:4222"}, nats_url="nats://h:4222")
    assert got == {"nats_url": "nats://h:4222"}


def test_top_level_nats_url_disagreeing_with_the_dict() -> None:
    with pytest.raises(SettingsError, match=r"EBIND_NATS_URL and settings.EBIND\['NATS_URL'\]"):
        app_options({"NATS_URL": "nats://a:4222"}, nats_url="nats://b:4222")


def test_ebind_must_be_a_dict() -> None:
    with pytest.raises(SettingsError, match=r"settings\.EBIND must be a dict, got list"):
        app_options(["nats://a:4222"])


def test_unknown_key_is_named_with_the_known_ones() -> None:
    with pytest.raises(SettingsError, match="unknown key 'URL'") as info:
        app_options({"URL": "nats://a:4222"})
    assert "NATS_URL" in str(info.value) and "PUBLISH_TIMEOUT" in str(info.value)


@pytest.mark.parametrize(
    ("key", "value", "want"),
    [
        ("NATS_URL", 4222, "a URL string or a list of URL strings"),
        ("NATS_URL", ["nats://a:4222", None], "a URL string or a list of URL strings"),
        ("NAME", 7, "a string"),
        ("CLIENT_ID", b"web", "a string"),
        ("REPLICAS", "3", "an integer"),
        ("REPLICAS", True, "an integer"),
        ("REPLICAS", 3.0, "an integer"),
        ("PUBLISH_TIMEOUT", "5", "a number of seconds"),
        ("PUBLISH_TIMEOUT", False, "a number of seconds"),
    ],
)
def test_wrong_types_are_named(key: str, value: Any, want: str) -> None:
    with pytest.raises(SettingsError) as info:
        app_options({key: value})
    assert str(info.value) == f"settings.EBIND[{key!r}] must be {want}, got {value!r}"


def test_wrong_top_level_nats_url_type() -> None:
    with pytest.raises(SettingsError, match=r"\['NATS_URL'\] must be a URL string"):
        app_options(nats_url=None)


def test_settings_error_is_a_value_error() -> None:
    assert issubclass(SettingsError, ValueError)


def test_task_modules_per_installed_app() -> None:
    assert task_modules(["shop", "billing.core"]) == ["shop.tasks", "billing.core.tasks"]
    assert task_modules(["shop"], "jobs.ebind") == ["shop.jobs.ebind"]
    assert task_modules([]) == []


@pytest.mark.parametrize("module", ["", "tasks.", "my-tasks", ".tasks", "1tasks"])
def test_task_module_must_be_a_dotted_name(module: str) -> None:
    with pytest.raises(SettingsError, match="dotted Python name"):
        task_modules(["shop"], module)
