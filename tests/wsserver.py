"""A websocket server on loopback, on its own thread and event loop, for the collector's tests."""

from __future__ import annotations

import asyncio
import threading
from typing import Self

import websockets
from websockets.asyncio.server import ServerConnection


class LoopbackWebsocketServer:
    """Serves ``_handler`` (a subclass's) on 127.0.0.1 at a free ``port`` inside a ``with`` block."""

    def __init__(self) -> None:
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stopping is not None
        self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        async with websockets.serve(self._handler, "127.0.0.1", 0, compression=None) as server:
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stopping.wait()

    async def _handler(self, ws: ServerConnection) -> None:
        raise NotImplementedError
