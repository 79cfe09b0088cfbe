"""A loopback port where connects are refused and that no other process can take meanwhile.

Binding port 0 and closing the socket again only names a port that was free a moment ago:
under parallel test workers another server may bind it before the test connects. Keeping
the socket bound without listening keeps the port ours and still refuses every connect.
"""

from __future__ import annotations

import socket


class RefusedPort:
    """A bound, never-listening loopback socket; ``release`` frees the port for a server."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = int(self._sock.getsockname()[1])

    def release(self) -> None:
        """Free the port, e.g. just before a test starts a server on it."""
        self._sock.close()
