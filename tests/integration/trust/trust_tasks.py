"""Tasks shared by the signing and payload-codec integration tests (run in-process)."""

from __future__ import annotations

from ebind import App, NonRetryable

app = App("trust", nats_url="nats://127.0.0.1:1")
TICKS: list[str] = []
FLAKY_FAILS: set[str] = set()


@app.task(name="trust.echo")
async def echo(value: str) -> str:
    return value + "!"


@app.task(name="trust.limited", rate_limit="5/s", rate_key="who")
async def limited(who: str, n: int) -> str:
    return f"{who}-{n}"


@app.task(name="trust.concat")
async def concat(a: str, b: str) -> str:
    return a + "+" + b


@app.task(name="trust.tick")
async def tick(tag: str) -> None:
    TICKS.append(tag)


@app.task(name="trust.flaky")
async def flaky(tag: str) -> str:
    if tag in FLAKY_FAILS:
        raise NonRetryable(f"flaky {tag} is set to fail")
    return "ok " + tag


@app.task(name="trust.leak")
async def leak(secret: str) -> str:
    raise NonRetryable(f"login refused for token {secret}")


@app.task(name="trust.reject")
async def reject(value: str) -> str:
    raise NonRetryable("rejected")
