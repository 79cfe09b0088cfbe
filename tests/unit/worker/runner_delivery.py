"""A stand-in for a JetStream delivery: the parts AttemptRunner uses, with a log of settlements."""

from __future__ import annotations


class Delivery:
    """The parts of a JetStream delivery the runner uses."""

    def __init__(self, data: bytes, delivered: int, subject: str) -> None:
        self.data = data
        self.subject = subject
        self.reply = f"$JS.ACK.EBIND_TASKS.w.{delivered}.7.7.0.0"
        self.headers = None
        self.acts: list[str] = []

    async def ack(self) -> None:
        self.acts.append("ack")

    async def nak(self, delay: float | None = None) -> None:
        self.acts.append("nak")

    async def term(self) -> None:
        self.acts.append("term")
