"""Pure debug snapshots of a DAG and their text rendering (no IO beyond the given file).

``build_debug`` turns loaded records into a ``DAGDebug``: steps ordered by ``added_at``,
counts per status, per-step queue/exec durations, blockers (why a pending step is not
running), breakpoints and signals. ``write_debug`` renders it in the layout of the Go
``WriteDebug`` report. The IO side (loading records, ``debug_print``) lives elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Protocol

import msgspec

from ebind._printable import printable
from ebind.workflow.state import DAGState
from ebind.workflow.types import BPState, DAGMeta, SignalRecord, StepRecord, StepStatus

__all__ = [
    "STEP_GLYPHS",
    "BreakpointInfo",
    "DAGDebug",
    "SignalInfo",
    "StepBlocker",
    "StepDebug",
    "build_debug",
    "compute_breakpoints",
    "compute_signals",
    "count_blocked",
    "count_waiting_steps",
    "human_duration",
    "matches_labels",
    "write_debug",
]


class StepDebug(msgspec.Struct, kw_only=True):
    """A step record with its computed durations and breakpoint/signal notes."""

    record: StepRecord
    queue_duration: timedelta = timedelta(0)
    exec_duration: timedelta = timedelta(0)
    bp_note: str = ""
    sig_note: str = ""


class StepBlocker(msgspec.Struct, kw_only=True):
    """Why a pending step is not running: live deps, after-breakpoint gates, signals."""

    step_id: str
    waiting_on: list[str] = []
    gated_by: list[str] = []
    waiting_signals: list[str] = []


class BreakpointInfo(msgspec.Struct, kw_only=True):
    """One declared breakpoint position of a step and its live state."""

    step_id: str
    position: str
    labels: list[str]
    armed: bool
    state: BPState = BPState.NONE
    blocked_since: datetime | None = None
    holding: list[str] = []


class SignalInfo(msgspec.Struct, kw_only=True):
    """One signal name: delivered or awaited, and which pending steps wait for it."""

    name: str
    delivered: bool
    delivered_at: datetime | None = None
    payload: msgspec.Raw | None = None
    waiting: list[str] = []


class DAGDebug(msgspec.Struct, kw_only=True):
    """A structured snapshot of a DAG for logs, dashboards and the CLI."""

    meta: DAGMeta
    steps: list[StepDebug]
    counts: dict[StepStatus, int]
    total_duration: timedelta
    blockers: list[StepBlocker]
    breakpoints: list[BreakpointInfo]
    signals: list[SignalInfo]
    as_of: datetime


def matches_labels(meta: DAGMeta, labels: Iterable[str]) -> bool:
    """AND semantics: the DAG carries every wanted label (no labels matches everything)."""
    have = set(meta.labels)
    return all(label in have for label in labels)


def _state(
    meta: DAGMeta,
    steps: Iterable[StepRecord] | Mapping[str, StepRecord],
    signals: Iterable[SignalRecord] | Mapping[str, SignalRecord] | None = None,
) -> DAGState:
    recs = steps.values() if isinstance(steps, Mapping) else steps
    sigs = signals.values() if isinstance(signals, Mapping) else signals or ()
    return DAGState.from_records(meta, recs, sigs)


def _holding(st: DAGState, step_id: str) -> list[str]:
    return sorted(
        sid
        for sid, rec in st.steps.items()
        if rec.status is StepStatus.PENDING and step_id in (*rec.deps, *rec.optional_deps)
    )


def _bp_info(st: DAGState, rec: StepRecord, position: str, live: bool) -> BreakpointInfo:
    before = position == "before"
    labels = rec.break_before if before else rec.break_after
    released = (rec.bp_before if before else rec.bp_after) is BPState.RELEASED
    info = BreakpointInfo(
        step_id=rec.step_id,
        position=position,
        labels=list(labels),
        armed=not set(labels).isdisjoint(st.meta.active_breakpoints),
    )
    if released:
        info.state = BPState.RELEASED
    elif live:
        info.state = BPState.BLOCKED
        info.blocked_since = rec.bp_blocked_at
        if not before:
            info.holding = _holding(st, rec.step_id)
    return info


def _breakpoints(st: DAGState) -> list[BreakpointInfo]:
    # A terminal DAG never reports a live stop; released ones still show.
    ended = st.meta.status.terminal
    at_before = set() if ended else set(st.blocked_at_before())
    at_after = set() if ended else set(st.holding_at_after())
    infos: list[BreakpointInfo] = []
    for sid in sorted(st.steps):
        rec = st.steps[sid]
        if rec.break_before:
            infos.append(_bp_info(st, rec, "before", sid in at_before))
        if rec.break_after:
            infos.append(_bp_info(st, rec, "after", sid in at_after))
    return infos


def compute_breakpoints(
    meta: DAGMeta, steps: Iterable[StepRecord] | Mapping[str, StepRecord]
) -> list[BreakpointInfo]:
    """One info per declared breakpoint position, by step id, ``before`` before ``after``."""
    return _breakpoints(_state(meta, steps))


def compute_signals(
    meta: DAGMeta,
    steps: Iterable[StepRecord] | Mapping[str, StepRecord],
    signals: Iterable[SignalRecord] | Mapping[str, SignalRecord] | None,
) -> list[SignalInfo]:
    """Every delivered or awaited signal name, sorted, with the pending steps waiting on it.

    Waiters are listed whether or not their deps are satisfied; a terminal DAG has none.
    """
    st = _state(meta, steps, signals)
    names = set(st.signals)
    for rec in st.steps.values():
        names.update(rec.wait_signals)
    infos: list[SignalInfo] = []
    for name in sorted(names):
        rec_sig = st.signals.get(name)
        if rec_sig is not None:
            infos.append(
                SignalInfo(
                    name=name,
                    delivered=True,
                    delivered_at=rec_sig.delivered_at,
                    payload=rec_sig.payload,
                )
            )
            continue
        waiting = [] if meta.status.terminal else _signal_waiters(st, name)
        infos.append(SignalInfo(name=name, delivered=False, waiting=waiting))
    return infos


def _signal_waiters(st: DAGState, name: str) -> list[str]:
    return sorted(
        sid
        for sid, rec in st.steps.items()
        if rec.status is StepStatus.PENDING and name in rec.wait_signals
    )


def count_blocked(infos: Iterable[BreakpointInfo]) -> int:
    """How many breakpoints currently stop work (the ⦿ badge)."""
    return sum(1 for i in infos if i.state is BPState.BLOCKED)


def count_waiting_steps(infos: Iterable[SignalInfo]) -> int:
    """How many distinct steps wait on an undelivered signal (the ⚑ badge)."""
    return len({sid for i in infos for sid in i.waiting})


def _span(start: datetime | None, end: datetime | None) -> timedelta:
    if start is None or end is None:
        return timedelta(0)
    return end - start


def _blocker(st: DAGState, rec: StepRecord) -> StepBlocker | None:
    deps = list(dict.fromkeys([*rec.deps, *rec.optional_deps]))
    waiting_on = [d for d in deps if d not in st.steps or not st.steps[d].status.terminal]
    gated_by = [d for d in deps if d in st.steps and st.after_bp_holds(d)]
    signals = st.undelivered_signals(rec.step_id)
    if not (waiting_on or gated_by or signals):
        return None
    return StepBlocker(
        step_id=rec.step_id, waiting_on=waiting_on, gated_by=gated_by, waiting_signals=signals
    )


def _notes(infos: list[BreakpointInfo]) -> dict[str, list[str]]:
    notes: dict[str, list[str]] = {}
    for i in infos:
        if i.state is BPState.RELEASED:
            note = "bp:released"
        elif i.state is BPState.BLOCKED and i.position == "before":
            note = f"bp:blocked[{','.join(i.labels)}]"
        elif i.state is BPState.BLOCKED:
            note = f"bp:holding[{','.join(i.labels)}]→{{{','.join(i.holding)}}}"
        else:
            continue
        notes.setdefault(i.step_id, []).append(note)
    return notes


def _step_debug(st: DAGState, rec: StepRecord, bp_notes: list[str]) -> StepDebug:
    missing = sorted(st.undelivered_signals(rec.step_id))
    pending = rec.status is StepStatus.PENDING
    return StepDebug(
        record=rec,
        queue_duration=_span(rec.added_at, rec.started_at),
        exec_duration=_span(rec.started_at, rec.finished_at),
        bp_note=" ".join(bp_notes),
        sig_note=f"sig:waiting[{','.join(missing)}]" if pending and missing else "",
    )


def _total(meta: DAGMeta, recs: list[StepRecord]) -> timedelta:
    if not recs or not all(r.status.terminal for r in recs) or meta.created_at is None:
        return timedelta(0)
    ends = [r.finished_at for r in recs if r.finished_at is not None]
    return max(ends) - meta.created_at if ends else timedelta(0)


def build_debug(
    meta: DAGMeta,
    steps: Iterable[StepRecord] | Mapping[str, StepRecord],
    signals: Iterable[SignalRecord] | Mapping[str, SignalRecord] | None,
    now: datetime,
) -> DAGDebug:
    """A DAGDebug snapshot of the records as of ``now`` (the ages in write_debug)."""
    st = _state(meta, steps, signals)
    epoch = datetime.min.replace(tzinfo=now.tzinfo)
    recs = sorted(st.steps.values(), key=lambda r: (r.added_at or epoch, r.step_id))
    breakpoints = _breakpoints(st)
    notes = _notes(breakpoints)
    counts: dict[StepStatus, int] = {}
    for r in recs:
        counts[r.status] = counts.get(r.status, 0) + 1
    pending = [r for r in recs if r.status is StepStatus.PENDING]
    return DAGDebug(
        meta=meta,
        steps=[_step_debug(st, r, notes.get(r.step_id, [])) for r in recs],
        counts=counts,
        total_duration=_total(meta, recs),
        blockers=[b for b in (_blocker(st, r) for r in pending) if b is not None],
        breakpoints=breakpoints,
        signals=compute_signals(meta, st.steps, st.signals),
        as_of=now,
    )


# --- text rendering -----------------------------------------------------------------------


class _TextSink(Protocol):
    def write(self, s: str, /) -> object: ...


STEP_GLYPHS = {
    # one glyph per status, shared by write_debug and the ebind CLI tables
    StepStatus.DONE: "✓",
    StepStatus.FAILED: "✗",
    StepStatus.SKIPPED: "⊘",
    StepStatus.CANCELED: "■",
    StepStatus.RUNNING: "▶",
    StepStatus.PENDING: "⋯",
}
_COUNT_ORDER = (
    StepStatus.DONE,
    StepStatus.FAILED,
    StepStatus.SKIPPED,
    StepStatus.CANCELED,
    StepStatus.PENDING,
    StepStatus.RUNNING,
)


def human_duration(d: timedelta) -> str:
    """Go-style short duration: ``0s``, ``850ns``, ``1.5µs``, ``12.3ms``, ``4.56s``, ``1m5s``."""
    ns = (d.days * 86_400 + d.seconds) * 1_000_000_000 + d.microseconds * 1_000
    sign, ns = ("-", -ns) if ns < 0 else ("", ns)
    if ns == 0:
        return "0s"
    if ns < 1_000:
        return f"{sign}{ns}ns"
    if ns < 1_000_000:
        return f"{sign}{ns / 1e3:.1f}µs"
    if ns < 1_000_000_000:
        return f"{sign}{ns / 1e6:.1f}ms"
    if ns < 60_000_000_000:
        return f"{sign}{ns / 1e9:.2f}s"
    secs = ns // 1_000_000_000
    h, rem = divmod(secs, 3600)
    m, s = divmod(rem, 60)
    return f"{sign}{h}h{m}m{s}s" if h else f"{sign}{m}m{s}s"


def _age(dbg: DAGDebug, at: datetime | None) -> str:
    return human_duration(dbg.as_of - at) if at is not None else ""


def _header(dbg: DAGDebug) -> list[str]:
    meta = dbg.meta
    head = f"DAG {meta.id}  [{meta.status.value.upper()}]"
    if meta.created_at is not None:
        head += f"  created {_age(dbg, meta.created_at)} ago"
    if meta.paused_at is not None:
        head += f"  paused {_age(dbg, meta.paused_at)} ago"
    if dbg.total_duration > timedelta(0):
        head += f"  total {human_duration(dbg.total_duration)}"
    if n := count_blocked(dbg.breakpoints):
        head += f"  ⦿ {n} at breakpoint"
    if n := count_waiting_steps(dbg.signals):
        head += f"  ⚑ {n} waiting on signal"
    counts = ", ".join(f"{dbg.counts.get(s, 0)} {s.value}" for s in _COUNT_ORDER)
    lines = [head, f"  steps: {counts}"]
    if meta.labels:
        lines.append(f"  labels: {', '.join(meta.labels)}")
    return lines


def _annotation(sd: StepDebug) -> str:
    rec = sd.record
    parts = ["optional"] if rec.optional else []
    parts += ["held"] if rec.held else []
    parts += [f"attempts={rec.attempt}"] if rec.attempt > 1 else []
    parts += [f"worker={rec.worker_id}"] if rec.worker_id else []
    parts += [f"kind={rec.error_kind}"] if rec.error_kind else []
    parts += [n for n in (sd.bp_note, sd.sig_note) if n]
    if rec.status is StepStatus.SKIPPED and not rec.error_kind:
        parts.append("(cascade)")
    if rec.status is StepStatus.CANCELED:
        parts.append("(canceled)")
    return " ".join(parts)


def _when(d: timedelta, later: datetime | None) -> str:
    return "—" if later is None and d == timedelta(0) else human_duration(d)


def _step_rows(dbg: DAGDebug) -> list[str]:
    rows = [
        [
            STEP_GLYPHS.get(sd.record.status, "?"),
            sd.record.step_id,
            sd.record.status.value,
            f"queue {_when(sd.queue_duration, sd.record.started_at)}",
            f"exec {_when(sd.exec_duration, sd.record.finished_at)}",
            _annotation(sd),
        ]
        for sd in dbg.steps
    ]
    widths = [max((len(r[i]) for r in rows), default=0) for i in range(5)]
    return [
        ("  " + "".join(c.ljust(w + 2) for c, w in zip(r, widths, strict=False)) + r[5]).rstrip()
        for r in rows
    ]


def _golist(items: list[str]) -> str:
    return f"[{' '.join(items)}]"


def _blocker_lines(dbg: DAGDebug) -> list[str]:
    if not dbg.blockers:
        return ["  blockers: none"]
    lines = ["  blockers:"]
    for b in dbg.blockers:
        parts = [f"waiting on: {_golist(b.waiting_on)}"] if b.waiting_on else []
        parts += [f"gated by after-bp: {_golist(b.gated_by)}"] if b.gated_by else []
        parts += [f"waiting on signal: {_golist(b.waiting_signals)}"] if b.waiting_signals else []
        lines.append(f"    {b.step_id} {'  '.join(parts)}")
    return lines


def _breakpoint_lines(dbg: DAGDebug) -> list[str]:
    lines = ["", "  breakpoints:"]
    for i in dbg.breakpoints:
        line = f"    {i.step_id} {i.position} [{', '.join(i.labels)}]  "
        line += "armed" if i.armed else "inactive"
        if i.state is BPState.BLOCKED:
            line += "  ⦿ blocked"
            if i.blocked_since is not None:
                line += f" {_age(dbg, i.blocked_since)} ago"
            if i.holding:
                line += f"  holding {_golist(i.holding)}"
        elif i.state is BPState.RELEASED:
            line += "  released"
        lines.append(line)
    return lines


def _signal_lines(dbg: DAGDebug) -> list[str]:
    lines = ["", "  signals:"]
    for s in dbg.signals:
        if s.delivered:
            state = "delivered"
            if s.delivered_at is not None:
                state += f" {_age(dbg, s.delivered_at)} ago"
        else:
            state = "awaited"
        waiting = f"  ⚑ waiting {_golist(s.waiting)}" if s.waiting else ""
        lines.append(f"    {s.name}  {state}{waiting}")
    return lines


def write_debug(file: _TextSink, dbg: DAGDebug) -> None:
    """Render ``dbg`` as the human-readable report to a text file object."""
    lines = [*_header(dbg), "", *_step_rows(dbg), "", *_blocker_lines(dbg)]
    if dbg.breakpoints:
        lines += _breakpoint_lines(dbg)
    if dbg.signals:
        lines += _signal_lines(dbg)
    # Labels, signal names and errors come from records others may write: no escapes.
    file.write("\n".join(printable(line) for line in lines) + "\n")
