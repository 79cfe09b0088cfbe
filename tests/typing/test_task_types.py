"""Static typing of Task[P, R] / Future[R]: checked by mypy (`mypy tests/typing`), run by pytest."""

from __future__ import annotations

from typing import Any, assert_type

import msgspec

import ebind
from ebind.sync import SyncResult

app = ebind.App("typing")


class User(msgspec.Struct):
    id: str


@app.task
async def fetch_user(user_id: str) -> User:
    return User(id=user_id)


@app.task(name="img.resize", timeout=60)
def resize(ctx: ebind.Context, image_id: str, width: int = 800) -> str:
    return f"{image_id}:{width}"


@app.task
def plain(a: int, b: int) -> float:
    return a / b


@app.task(retry=ebind.RetryPolicy.none())
async def with_ctx_async(ctx: ebind.Context, n: int) -> list[int]:
    return [n]


async def _checks() -> None:
    # The Context parameter is not part of P; wrong calls are type errors (strict mode
    # reports an unused ignore, so each ignore below proves that mypy rejects the call).
    await fetch_user.delay(1)  # type: ignore[arg-type]
    await resize.delay(ebind.Context(task_id="t", name="n"), "img")  # type: ignore[arg-type]
    await resize.delay("img", widht=3)  # type: ignore[call-arg]
    await plain.delay(1)  # type: ignore[call-arg]

    assert_type(await fetch_user("u1"), User)
    assert_type(await resize("img", width=10), str)

    fut = await fetch_user.delay("u1")
    assert_type(fut, ebind.Future[User])
    assert_type(await fut.result(), User)
    assert_type(await (await resize.delay("img")).result(timeout=1.0), str)
    assert_type(await (await plain.delay(1, 2)).result(), float)
    assert_type(await (await with_ctx_async.delay(3)).result(), list[int])
    assert_type(await resize.send("img"), str)
    assert_type(await plain.apply_async((1, 2), countdown=5), ebind.Future[float])
    assert_type(await app.enqueue("img.resize", "img"), ebind.Future[Any])
    assert_type(await app.send(resize, "img"), str)
    assert_type(fut.id, str)


def test_typing_module_imports() -> None:
    assert fetch_user.name.endswith("fetch_user")
    assert resize.name == "img.resize"


def _sync_checks() -> None:
    # The blocking API infers the same result types as the async one.
    res = fetch_user.sync.delay("u1")
    assert_type(res, SyncResult[User])
    assert_type(res.get(timeout=1.0), User)
    assert_type(res.ready(), bool)
    assert_type(res.id, str)
    assert_type(resize.sync.delay("img", width=10).get(), str)
    assert_type(plain.sync.apply_async((1, 2), countdown=5), SyncResult[float])
    assert_type(with_ctx_async.sync.delay_many([(1,), (2,)]), list[SyncResult[list[int]]])
    assert_type(resize.sync.send("img"), str)
    assert_type(app.sync.enqueue("img.resize", "img"), SyncResult[Any])
    assert_type(app.sync.gather([plain.sync.delay(1, 2)]), list[float])
    assert_type(app.sync.future("some-id"), SyncResult[Any])
    fetch_user.sync.delay(1)  # type: ignore[arg-type]
    plain.sync.delay(1)  # type: ignore[call-arg]
