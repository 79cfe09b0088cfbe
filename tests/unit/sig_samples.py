"""Module-level handlers the signature/codec/registry tests inspect (stable names)."""

from __future__ import annotations

import dataclasses
from typing import TypedDict

import msgspec

from ebind.context import Context


class User(msgspec.Struct):
    id: str
    age: int = 0


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Opts(TypedDict):
    verbose: bool


async def fetch_user(user_id: str) -> User:
    return User(id=user_id)


def resize(ctx: Context, image_id: str, width: int = 800) -> str:
    return f"{ctx.name}:{image_id}:{width}"


def mixed(
    u: User, p: Point, o: Opts, tags: list[str], maybe: int | None = None, any_: object = None
) -> dict[str, int]:
    return {}


def no_annotations(a, b=1):  # type: ignore[no-untyped-def]
    return a


def returns_nothing(x: int) -> None:
    return None


class Holder:
    def method(self, x: int) -> int:
        return x
