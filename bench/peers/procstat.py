"""CPU and memory of a process tree, read from /proc (stdlib only: every peer venv imports it)."""

from __future__ import annotations

import os
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    # The command name may hold spaces and parentheses; the fields after the last ")" are fixed.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def descendants(pid: int) -> list[int]:
    """``pid`` and every live process below it (pool children of prefork-style workers)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int(_stat(int(entry.name))[1])
        except (OSError, IndexError, ValueError):
            continue  # exited while we looked
        parents.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(parents.get(p, []))
    return out


def tree_cpu(pids: list[int]) -> float:
    """User + system CPU seconds of the processes and all their descendants."""
    total = 0.0
    for root in pids:
        for p in descendants(root):
            try:
                fields = _stat(p)
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def tree_rss_mb(pids: list[int]) -> float:
    """Resident memory of the processes and their descendants, in MB."""
    total = 0.0
    for root in pids:
        for p in descendants(root):
            try:
                lines = Path(f"/proc/{p}/status").read_text().splitlines()
            except OSError:
                continue
            for line in lines:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
    return total
