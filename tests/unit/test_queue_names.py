"""Queues and bands: names are untrusted, subjects and durables never collide or overlap."""

from __future__ import annotations

import pytest

from ebind.errors import InvalidName
from ebind.queues import (
    BANDS,
    LANE_DURABLE_PREFIX,
    Lane,
    band_rank,
    check_priority,
    check_queue,
    lane_durable,
    lane_subject,
    lanes_for,
    parse_queues,
    parse_subject,
    wire_priority,
    wire_queue,
)
from ebind.streams import subject_matches, task_subject


@pytest.mark.parametrize("name", ["billing", "emails-eu", "Q_1", "x" * 64])
def test_valid_queue_names_pass(name: str) -> None:
    assert check_queue(name) == name


@pytest.mark.parametrize("name", ["", "a.b", "a b", "*", ">", "bill\ning", "é", "x" * 65, "a\x00b"])
def test_hostile_queue_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidName) as info:
        check_queue(name)
    assert info.value.kind == "queue"


@pytest.mark.parametrize("bad", [5, None, b"billing", ["billing"]])
def test_a_queue_name_must_be_a_string(bad: object) -> None:
    with pytest.raises(InvalidName):
        check_queue(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("band", BANDS)
def test_bands_pass(band: str) -> None:
    assert check_priority(band) == band


@pytest.mark.parametrize("bad", ["", "HIGH", "urgent", "0", 0, 9, None])
def test_other_priorities_are_refused(bad: object) -> None:
    with pytest.raises(InvalidName, match="priority must be one of high, normal, low"):
        check_priority(bad)  # type: ignore[arg-type]


def test_ranks_put_high_first() -> None:
    assert [band_rank(b) for b in ("high", "normal", "low", "")] == [0, 1, 2, 1]


def test_defaults_stay_off_the_wire() -> None:
    assert (wire_queue("default"), wire_priority("normal")) == ("", "")
    assert (wire_queue("billing"), wire_priority("high")) == ("billing", "high")


def test_the_default_lane_keeps_the_subject_of_earlier_releases() -> None:
    assert lane_subject("mail.send") == "TASKS.mail.send"
    assert lane_subject("mail.send", "default", "normal") == "TASKS.mail.send"
    assert task_subject("mail.send") == "TASKS.mail.send"


def test_other_lanes_have_their_own_prefix() -> None:
    assert lane_subject("mail.send", "billing") == "TASKQ.billing.normal.mail.send"
    assert lane_subject("mail.send", "", "high") == "TASKQ.default.high.mail.send"
    assert task_subject("mail.send", "", "billing", "low") == "TASKQ.billing.low.mail.send"


def test_a_target_wins_over_queue_and_band() -> None:
    assert task_subject("t", "gpu", "billing", "high") == task_subject("t", "gpu")


def test_lane_subjects_never_overlap() -> None:
    """Every durable filters on one exact subject: distinct lanes give distinct subjects,
    and none matches another's filter (the server refuses overlapping work-queue filters)."""
    names = ["a", "a.b", "a_b", "default.high.a", "TASKQ", "b.c.d"]
    lanes = lanes_for(names, ["default", "billing", "high"])
    subjects = [lane.subject for lane in lanes]
    assert len(set(subjects)) == len(subjects) == len(names) * 3 * 3
    for f in subjects:
        assert [s for s in subjects if subject_matches(f, s)] == [f]


def test_durables_are_distinct_valid_consumer_names() -> None:
    names = ["a.b", "a_b", "x" * 200, "a-b"]
    lanes = lanes_for(names, ["default", "q" * 64])
    durables = [lane.durable for lane in lanes]
    assert len(set(durables)) == len(durables)
    for d in durables:
        assert d.startswith(LANE_DURABLE_PREFIX)
        assert not set(d) & set(". *>\t")
        assert len(d) <= 160


def test_lanes_come_highest_band_first_and_each_once() -> None:
    lanes = lanes_for(["b", "a", "a"], ["q2", "q1", "q1"])
    assert lanes[0] == Lane(0, "q1", "a")
    assert [lane.band for lane in lanes] == ["high"] * 4 + ["normal"] * 4 + ["low"] * 4
    assert lanes[6].durable == lane_durable("a", "q2", "normal")


def test_parse_queues() -> None:
    assert parse_queues(" billing, emails,billing ") == ("billing", "emails")
    with pytest.raises(InvalidName):
        parse_queues(" , ")
    with pytest.raises(InvalidName):
        parse_queues("billing,a.b")


@pytest.mark.parametrize(
    ("subject", "parsed"),
    [
        ("TASKS.mail.send", ("default", "normal", "mail.send")),
        ("TASKQ.billing.high.charge", ("billing", "high", "charge")),
        ("TASKQ.billing.high.a.b", ("billing", "high", "a.b")),
        ("TASKQ.billing.urgent.charge", None),
        ("TASKQ.bill ing.high.charge", None),
        ("TASKQ.billing.high", None),
        ("TASKS_TARGET.Z3B1.charge", None),
        ("TASKS.", None),
        ("OTHER.x", None),
    ],
)
def test_parse_subject_reads_only_valid_lanes(
    subject: str, parsed: tuple[str, str, str] | None
) -> None:
    assert parse_subject(subject) == parsed
    if parsed is not None:
        assert lane_subject(parsed[2], parsed[0], parsed[1]) == subject


def test_queues_from_settings_and_the_environment() -> None:
    from ebind.config import parse_settings
    from ebind.errors import InvalidArguments

    assert parse_settings({"EBIND_WORKER_QUEUES": "billing, emails"}).worker == {
        "queues": ["billing", "emails"]
    }
    assert parse_settings({"worker_queues": ["reports"]}).worker == {"queues": ["reports"]}
    with pytest.raises(InvalidArguments, match="EBIND_WORKER_QUEUES"):
        parse_settings({"worker_queues": "billing,a.b"})


def test_the_cli_flag_checks_queue_names() -> None:
    import click

    from ebind.cli.worker import _queue_list

    assert _queue_list(None) is None
    assert _queue_list("billing,emails") == ["billing", "emails"]
    with pytest.raises(click.BadParameter, match="queue"):
        _queue_list("billing,*")
