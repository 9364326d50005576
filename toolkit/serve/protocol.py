"""uvicorn's HTTP protocol (httptools, else h11), with what one turn of the event loop writes to a
connection sent in one write.

uvicorn writes a response's status line and headers as ``http.response.start`` comes and its body
as ``http.response.body`` comes: two writes, two TCP segments, and the client woken twice for one
small answer (on loopback each costs about as much as parsing the request). ``OneWrite`` holds
what is written until the loop's next turn, then writes it at once; a streamed answer (server-sent
events) still goes out as it comes, a turn later at most."""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.auto import AutoHTTPProtocol


class OneWrite:
    """A transport whose writes within one turn of the event loop reach ``transport`` as one
    write; everything else is the transport's. ``close`` writes what is held first."""

    __slots__ = ("_transport", "_loop", "_held")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self._transport, self._loop = transport, loop
        self._held: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        if self._held is None:
            self._held = [data]
            self._loop.call_soon(self.flush)
        else:
            self._held.append(data)

    def flush(self) -> None:
        held, self._held = self._held, None
        if held and not self._transport.is_closing():
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class OneWriteHTTP(AutoHTTPProtocol):  # type: ignore[misc,valid-type]
    """uvicorn's HTTP protocol on a ``OneWrite`` transport (``uvicorn.run(..., http=OneWriteHTTP)``)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(OneWrite(transport, asyncio.get_running_loop()))
