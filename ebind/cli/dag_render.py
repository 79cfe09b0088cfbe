"""Pure text rendering for ``ebind dag``: step counts, the tree, step details, event lines.

No IO here: each function turns records into strings, so the layouts are testable
without a server and the command module stays about fetching and printing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from ebind._printable import Styled
from ebind.cli.output import age, printable, status_style, style, truncate
from ebind.workflow.debug import STEP_GLYPHS
from ebind.workflow.types import BPState, DAGMeta, Event, EventKind, StepRecord, StepStatus

__all__ = [
    "GLYPHS",
    "event_line",
    "fmt_time",
    "glyph",
    "step_counts",
    "step_detail_lines",
    "steps_cell",
    "tree_lines",
]

GLYPHS = STEP_GLYPHS  # the write_debug report and the tables use one set
_CELL_ORDER = (
    StepStatus.DONE,
    StepStatus.FAILED,
    StepStatus.RUNNING,
    StepStatus.PENDING,
    StepStatus.SKIPPED,
    StepStatus.CANCELED,
)


def glyph(status: StepStatus) -> str:
    """The status glyph (``?`` for anything unknown), coloured on a terminal."""
    return style(GLYPHS.get(status, "?"), fg=_fg(status))


def _fg(status: StepStatus) -> str | None:
    return {
        StepStatus.DONE: "green",
        StepStatus.FAILED: "red",
        StepStatus.SKIPPED: "yellow",
        StepStatus.CANCELED: "magenta",
        StepStatus.RUNNING: "cyan",
        StepStatus.PENDING: "blue",
    }.get(status)


def step_counts(recs: Iterable[StepRecord]) -> dict[str, int]:
    """Steps per status (every status present, zeros included) plus ``total``."""
    counts = {s.value: 0 for s in StepStatus}
    total = 0
    for r in recs:
        counts[r.status.value] = counts.get(r.status.value, 0) + 1
        total += 1
    counts["total"] = total
    return counts


def steps_cell(counts: dict[str, int], blocked: int, waiting: int) -> str:
    """``4 (✓3 ✗0 ▶1 ⋯0 ⊘0 ■0)`` plus ``⦿n`` / ``⚑n`` badges when steps are stopped."""
    parts = " ".join(f"{GLYPHS[s]}{counts.get(s.value, 0)}" for s in _CELL_ORDER)
    cell = f"{counts.get('total', 0)} ({parts})"
    if blocked:
        cell += f" ⦿{blocked}"
    if waiting:
        cell += f" ⚑{waiting}"
    return cell


def _edges(recs: Sequence[StepRecord]) -> tuple[dict[str, list[str]], list[str]]:
    ids = {r.step_id for r in recs}
    children: dict[str, list[str]] = {r.step_id: [] for r in recs}
    roots = []
    for r in recs:
        parents = [d for d in dict.fromkeys([*r.deps, *r.optional_deps]) if d in ids]
        for p in parents:
            children[p].append(r.step_id)
        if not parents:
            roots.append(r.step_id)
    return {k: sorted(v) for k, v in children.items()}, sorted(roots)


def _node(rec: StepRecord) -> str:
    return f"{glyph(rec.status)} {printable(rec.step_id)} [{status_style(rec.status.value)}]"


def tree_lines(meta: DAGMeta, recs: Sequence[StepRecord], blocked: Iterable[str] = ()) -> list[str]:
    """The DAG as a tree: roots flush left, children under each parent with box drawing.

    A step with several parents appears under each; after its first appearance it is
    printed without children and marked ``↑ see <first parent>``. ``blocked`` steps
    (a breakpoint stops them now) get a ``⦿bp`` badge.
    """
    by_id = {r.step_id: r for r in recs}
    children, roots = _edges(recs)
    stopped = set(blocked)
    first_parent: dict[str, str] = {}
    lines = [f"DAG {printable(meta.id)} [{status_style(meta.status.value)}]"]

    def walk(sid: str, prefix: str, connector: str, parent: str) -> None:
        line = prefix + connector + _node(by_id[sid])
        if sid in first_parent:
            lines.append(line + style(f"  ↑ see {first_parent[sid] or 'above'}", dim=True))
            return
        first_parent[sid] = parent
        lines.append(line + ("  ⦿bp" if sid in stopped else ""))
        kids = children[sid]
        inner = prefix + ("" if not connector else "   " if connector == "└─ " else "│  ")
        for i, kid in enumerate(kids):
            walk(kid, inner, "└─ " if i == len(kids) - 1 else "├─ ", sid)

    for root in roots:
        walk(root, "", "", "")
    # Only a dependency cycle could leave steps unreached; show them rather than hide them.
    for sid in sorted(set(by_id) - set(first_parent)):
        walk(sid, "", "", "")
    # Every part read from a record was made printable above (step ids come from keys a
    # DAG producer may write); the escapes left are ebind's own colours.
    return [Styled(line) for line in lines]


def _bp_suffix(rec: StepRecord, state: BPState, now: datetime) -> str:
    if state is BPState.RELEASED:
        return "  [released]"
    if state is BPState.BLOCKED:
        since = f" {age(rec.bp_blocked_at, now)} ago" if rec.bp_blocked_at else ""
        return f"  [blocked{since}]"
    return ""


def fmt_time(t: datetime | None) -> str:
    """RFC 3339 in UTC with milliseconds (empty when unset)."""
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z") if t else ""


def step_detail_lines(rec: StepRecord, rev: int, now: datetime) -> list[str]:
    """``dag step get``: a header line, then one ``key: value`` line per set field."""
    rows: list[tuple[str, str]] = [("fn", rec.fn_name), ("added_at", fmt_time(rec.added_at))]
    rows += [("started_at", fmt_time(rec.started_at))] if rec.started_at else []
    rows += [("finished_at", fmt_time(rec.finished_at))] if rec.finished_at else []
    rows += [("worker", rec.worker_id)] if rec.worker_id else []
    rows += [("target", rec.target)] if rec.target else []
    rows += [("error_kind", rec.error_kind)] if rec.error_kind else []
    rows += [("error_msg", rec.error_message)] if rec.error_message else []
    rows += [("deps", ", ".join(rec.deps))] if rec.deps else []
    rows += [("optional", ", ".join(rec.optional_deps))] if rec.optional_deps else []
    if rec.break_before:
        rows.append(
            ("break_before", ", ".join(rec.break_before) + _bp_suffix(rec, rec.bp_before, now))
        )
    if rec.break_after:
        rows.append(
            ("break_after", ", ".join(rec.break_after) + _bp_suffix(rec, rec.bp_after, now))
        )
    rows += [("wait_signals", ", ".join(rec.wait_signals))] if rec.wait_signals else []
    rows.append(("args", bytes(rec.args_json).decode(errors="replace")))
    width = max(len(k) for k, _ in rows) + 1
    head = (
        f"Step {printable(rec.dag_id)}/{printable(rec.step_id)}"
        f"  [{status_style(rec.status.value)}]  attempt={rec.attempt}  rev={rev}"
    )
    flags = "  optional" if rec.optional else ""
    flags += "  held" if rec.held else ""
    # Every value was read from a record others may write: no escape sequence passes.
    return [Styled(head + flags)] + [f"  {(k + ':').ljust(width)} {printable(v)}" for k, v in rows]


def event_line(ev: Event, at: datetime) -> str:
    """One ``dag watch`` line: time, DAG, step, event kind and what the kind carries."""
    # An event's strings are whatever its publisher wrote: each is made printable here.
    p = printable
    stamp = fmt_time(at)
    line = f"{stamp}  DAG {p(ev.dag_id)}"
    if ev.step_id and ev.step_id != ev.dag_id:
        line += f"  step {p(ev.step_id)}"
    line += f"  {style(ev.kind.value, bold=True)}"
    if ev.kind is EventKind.COMPLETED and ev.status is not None:
        line += f"  status={status_style(ev.status.value)}"
        if ev.error_kind:
            line += f"  err={p(ev.error_kind)}"
            if ev.error_message:
                line += f": {p(truncate(ev.error_message, 80))}"
    elif ev.kind is EventKind.BP_HIT:
        line += f"  ⦿ position={p(ev.bp_position)} labels={p(','.join(ev.bp_labels))}"
    elif ev.kind is EventKind.BP_RESUMED:
        line += f"  position={p(ev.bp_position)} label={p(','.join(ev.bp_labels))}"
    elif ev.kind is EventKind.SIGNAL:
        line += f"  ⚑ name={p(ev.signal_name)}"
    return Styled(line)
