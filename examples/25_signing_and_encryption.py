"""Signed task messages, encrypted arguments and results, redacted error texts.

# expect: charged 1250 cents to the card ending 4242
# expect: card number stored in plaintext anywhere: False
# expect: unsigned message dead-lettered as unsigned
# expect: error stored as: login refused for token ***
"""

from __future__ import annotations

import asyncio
import re
import secrets

import ebind
import ebind.logging
from ebind.contrib.fernet import FernetCodec, generate_key
from ebind.embed import start_node

CARD = "4000123412344242"
TOKEN_RE = re.compile(r"tok_[A-Za-z0-9]+")

# In production the keys come from a secret store (or $EBIND_SIGNING_KEYS / $EBIND_FERNET_KEYS).
app = ebind.App(
    "payments",
    signing_keys=[secrets.token_bytes(32)],
    payload_codec=FernetCodec([generate_key()]),
    redact_error=lambda text: TOKEN_RE.sub("***", text),
)


@app.task(name="payments.charge")
async def charge(card: str, cents: int) -> str:
    return f"charged {cents} cents to the card ending {card[-4:]}"


@app.task(name="payments.login", retry=ebind.RetryPolicy.none())
async def login(token: str) -> None:
    raise ebind.NonRetryable(f"login refused for token {token}")


async def stored_bytes(stream: str) -> bytes:
    """Every message of ``stream``, concatenated, as the server stores them."""
    info = await app.js.stream_info(stream)
    out = b""
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            out += (await app.js.get_msg(stream, seq)).data or b""
        except Exception:
            continue  # consumed from the work queue meanwhile
    return out


async def main() -> None:
    ebind.logging.configure(level="critical")
    with start_node() as node:
        app.servers = [node.client_url]
        async with app:
            worker = app.worker(concurrency=4, scheduler=False)
            running = asyncio.create_task(worker.run())
            try:
                print(await (await charge.delay(CARD, 1250)).result(timeout=10))
                stored = b"".join([await stored_bytes(s) for s in ("EBIND_RESP", "EBIND_DLQ")])
                print("card number stored in plaintext anywhere:", CARD.encode() in stored)

                # A producer without the signing key: the worker refuses its message.
                async with ebind.App("intruder", nats_url=node.client_url) as intruder:
                    await intruder.send("payments.charge", CARD, 1)
                for _ in range(100):
                    kinds = [d.entry.error.kind for d in await app.dlq.list()]
                    if kinds:
                        break
                    await asyncio.sleep(0.05)
                print("unsigned message dead-lettered as", kinds[0])

                try:
                    await (await login.delay("tok_Zx81")).result(timeout=10)
                except ebind.TaskFailed as exc:
                    print("error stored as:", exc.error.message)
            finally:
                await worker.stop()
                await running


if __name__ == "__main__":
    asyncio.run(main())
