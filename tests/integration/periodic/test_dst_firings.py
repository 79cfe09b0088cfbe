"""Cron across daylight saving changes: the next runs ebind shows are the instants the server fires.

Real DST changes are months apart, so the test compiles its own time zone (with ``zic``) whose
clocks spring forward a few seconds from now and fall back a few seconds later. The server
loads it through ``ZONEINFO``, this process through the zoneinfo search path, and a cron
schedule in that zone then fires across both changes on the real server. Every firing the
server produced (read from the stream with the server's own timestamps) must be one that
:meth:`ebind.cron.CronSchedule.next_after` predicted, and ``app.schedules()`` must show the
first of them as the next run.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import zoneinfo
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import pytest
from nats.js.errors import NotFoundError

from ebind.app import App
from ebind.context import Context
from ebind.cron import parse_cron
from ebind.embed import start_node
from ebind.periodic import SCHEDULES_PREFIX
from ebind.streams import TASKS_STREAM, task_subject

ZONE = "Ebind/Test"
SCHEDULES = {
    "gap": "*/2 * 1-2 * * *",  # every 2 s while the wall clock reads 01:xx or 02:xx
    "overlap": "*/3 * 2-3 * * *",  # every 3 s while it reads 02:xx or 03:xx
}
LEAD = 5  # seconds from now to the spring-forward change
DAYLIGHT = 6  # seconds of summer time before the clocks fall back
TAIL = 7  # seconds watched after the fall-back


def _offset(seconds: int) -> str:
    sign = "-" if seconds < 0 else ""
    h, rest = divmod(abs(seconds), 3600)
    m, s = divmod(rest, 60)
    return f"{sign}{h}:{m:02d}:{s:02d}"


def _until(t: datetime) -> str:
    return t.strftime("%Y %b %d %H:%M:%S") + "u"


def compile_zone(directory: Path, spring: datetime, fall: datetime) -> None:
    """Write ``ZONE``, whose clocks read 02:00 at ``spring`` and jump an hour ahead.

    At ``fall`` they go back an hour, so the wall times just past 02:00 repeat. Offsets are
    whole minutes, as in every real zone (the server writes the next run with an offset of
    hours and minutes only).
    """
    zic = shutil.which("zic") or "/usr/sbin/zic"
    minutes = (2 * 60 - (spring.hour * 60 + spring.minute)) % 1440
    if minutes > 12 * 60:
        minutes -= 1440
    standard = minutes * 60
    source = directory / "ebind.zi"
    source.write_text(
        f"Zone {ZONE} {_offset(standard)} - STD {_until(spring)}\n"
        f"\t{_offset(standard + 3600)} - DST {_until(fall)}\n"
        f"\t{_offset(standard)} - STD\n",
        encoding="utf-8",
    )
    subprocess.run([zic, "-d", str(directory), str(source)], check=True, capture_output=True)


def _wall_step(t: datetime, tz: zoneinfo.ZoneInfo) -> timedelta:
    """How far the wall clock of ``tz`` moves in the real second before ``t``."""
    before = (t - timedelta(seconds=1)).astimezone(tz).replace(tzinfo=None)
    return t.astimezone(tz).replace(tzinfo=None) - before


@pytest.fixture
def zone_dir(tmp_path: Path) -> Iterator[Path]:
    """A zoneinfo directory this process searches first (restored after the test)."""
    directory = tmp_path / "zoneinfo"
    directory.mkdir()
    zoneinfo.reset_tzpath(to=[str(directory), *zoneinfo.TZPATH])
    try:
        yield directory
    finally:
        zoneinfo.reset_tzpath()
        zoneinfo.ZoneInfo.clear_cache()


def predicted(cron: str, start: datetime, end: datetime, tz: zoneinfo.ZoneInfo) -> list[datetime]:
    """Every instant in (start, end] ``cron`` fires, by ebind's calendar walk."""
    schedule = parse_cron(cron)
    out: list[datetime] = []
    t = schedule.next_after(start, tz)
    while t is not None and t <= end:
        out.append(t.astimezone(UTC))
        t = schedule.next_after(t, tz)
    return out


async def test_cron_fires_where_ebind_says_across_spring_forward_and_fall_back(
    zone_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    spring = now + timedelta(seconds=LEAD)
    fall = spring + timedelta(seconds=DAYLIGHT)
    compile_zone(zone_dir, spring, fall)
    tz = zoneinfo.ZoneInfo(ZONE)
    # the zone really has both changes: an hour skipped at spring, an hour repeated at fall
    assert spring.astimezone(tz).hour == 3
    assert _wall_step(spring, tz) == timedelta(hours=1, seconds=1)
    assert _wall_step(fall, tz) == timedelta(hours=-1, seconds=1)
    assert fall.astimezone(tz).hour == 2

    monkeypatch.setenv("ZONEINFO", str(zone_dir))  # read by the server's time library
    node = start_node(store_dir=tmp_path / "store", sync_interval=None)
    try:
        app = App("dst", nats_url=node.client_url)

        @app.task(name="tick")
        async def tick(ctx: Context) -> None:
            """Never runs: no worker; the test reads the firings from the stream."""

        async with app:
            scheduled_at = datetime.now(UTC)
            for name, cron in SCHEDULES.items():
                await app.schedule(name, "tick", cron=cron, tz=ZONE)
            shown = {info.name: info.next_run for info in await app.schedules()}
            end = fall + timedelta(seconds=TAIL)
            await asyncio.sleep((end - datetime.now(UTC)).total_seconds() + 0.5)
            for name in SCHEDULES:
                await app.unschedule(name)
            fired = await _firings(app, task_subject("tick"))
    finally:
        node.shutdown()

    for name, cron in SCHEDULES.items():
        want = predicted(cron, scheduled_at, end, tz)
        got = [f for f in fired if f.schedule == name]
        assert any(t < spring for t in want), (name, want)
        first = shown[name]
        assert first is not None and first.astimezone(UTC) == want[0], (name, first, want)
        # each server firing lands on a predicted instant (stream time is a few ms after it)
        matched = [min(want, key=lambda p, f=f: abs((f.at - p).total_seconds())) for f in got]
        late = [(f.at - p).total_seconds() for f, p in zip(got, matched, strict=True)]
        assert all(-0.05 <= d < 1.0 for d in late), (name, got, want)
        assert sorted(set(matched)) == matched, (name, "two firings for one instant", got)
        # none predicted is missing, apart from one the unschedule may have cut short
        assert set(want) - set(matched) <= {want[-1]}, (name, want, got)
        # and the next run the server computed after each firing is the one ebind computes
        # (compared in UTC: an aware time in a repeated hour never equals one in another zone)
        for f, p in zip(got, matched, strict=True):
            ours = parse_cron(cron).next_after(p, tz)
            assert ours is not None and f.server_next == ours.astimezone(UTC), (name, f, p)
    # "*/2 * 1-2": the gap leaves the walk in hour 3, so the repeated 02:00 does not fire
    assert not [f for f in fired if f.schedule == "gap" and f.at >= fall]
    # "*/3 * 2-3": fires before the gap, inside it, and again in the repeated hour
    assert [f for f in fired if f.schedule == "overlap" and f.at >= fall]


class Firing(NamedTuple):
    """One message a schedule produced: which schedule, when, and the next run it announced."""

    schedule: str
    at: datetime
    server_next: datetime


async def _firings(app: App, subject: str) -> list[Firing]:
    """Every message the schedules produced on ``subject``, with the server's timestamps."""
    js = app.js
    info = await js.stream_info(TASKS_STREAM)
    out: list[Firing] = []
    for seq in range(int(info.state.first_seq), int(info.state.last_seq) + 1):
        try:
            msg = await js.get_msg(TASKS_STREAM, seq)
        except NotFoundError:  # a schedule itself, deleted by unschedule
            continue
        if msg.subject != subject or msg.time is None:
            continue
        headers = msg.headers or {}
        scheduler = headers["Nats-Scheduler"].removeprefix(f"{SCHEDULES_PREFIX}.")
        server_next = datetime.fromisoformat(headers["Nats-Schedule-Next"])
        out.append(Firing(scheduler, msg.time.astimezone(UTC), server_next))
    return out
