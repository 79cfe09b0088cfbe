"""Pure registry: task name or alias -> HandlerSpec, with duplicate and collision checks."""

from __future__ import annotations

from collections.abc import Iterator

from ebind.errors import InvalidArguments
from ebind.signature import HandlerSpec

__all__ = ["Registry"]


class Registry:
    """Maps every registered name and alias to its HandlerSpec."""

    def __init__(self) -> None:
        self._specs: dict[str, HandlerSpec] = {}

    def register(self, spec: HandlerSpec) -> None:
        """Add ``spec`` under its name and aliases; all-or-nothing on collisions."""
        # Check every name before inserting any (the Go registry left partial registrations).
        for candidate in spec.names:
            existing = self._specs.get(candidate)
            if existing is not None:
                what = "name" if candidate == existing.name else f"an alias of {existing.name!r}"
                raise InvalidArguments(
                    f"task name {candidate!r} is already registered as {what}; "
                    "pass a different name= or aliases= to @app.task",
                    task_name=spec.name,
                    parameter="name" if candidate == spec.name else "aliases",
                )
        for candidate in spec.names:
            self._specs[candidate] = spec

    def get(self, name: str) -> HandlerSpec | None:
        """The spec registered under ``name`` (primary or alias), or None."""
        return self._specs.get(name)

    def names(self) -> list[str]:
        """Every registered name and alias, sorted."""
        return sorted(self._specs)

    def primary_names(self) -> list[str]:
        """Primary task names only (no aliases), sorted."""
        return sorted({s.name for s in self._specs.values()})

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._specs)
