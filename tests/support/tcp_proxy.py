"""A TCP proxy on loopback that a test controls, to fail the network under a server:
``forward`` relays bytes; ``reset`` aborts every connection and every new one (RST);
``blackhole`` accepts and relays nothing, so the peer waits on a silent socket; ``slow``
relays each chunk ``slow_seconds`` late (a saturated link or server)."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from types import TracebackType
from typing import Literal

Mode = Literal["forward", "reset", "blackhole", "slow"]


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with a RST, as a crashed peer or a dropped route does, not a clean FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.mode: Mode = "forward"
        self.slow_seconds = 3.0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._writers: set[asyncio.StreamWriter] = set()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TcpProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the proxy did not start")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def set_mode(self, mode: Mode) -> None:
        self.mode = mode
        if mode == "reset":
            self._loop.call_soon_threadsafe(self._abort_all)

    def _abort_all(self) -> None:
        for writer in list(self._writers):
            _abort(writer)
        self._writers.clear()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            self._abort_all()
            # Let the aborted transports close their sockets, and the handlers end.
            handlers = asyncio.all_tasks(self._loop)
            for handler in handlers:
                handler.cancel()
            self._loop.run_until_complete(asyncio.gather(*handlers, return_exceptions=True))
            self._loop.run_until_complete(asyncio.sleep(0))
            self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "reset":
            _abort(writer)
            return
        self._writers.add(writer)
        if self.mode == "blackhole":
            await self._swallow(reader)
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _abort(writer)
            return
        self._writers.add(upstream_writer)
        await asyncio.gather(
            self._pump(reader, upstream_writer),
            self._pump(upstream_reader, writer),
            return_exceptions=True,
        )

    async def _swallow(self, reader: asyncio.StreamReader) -> None:
        while await reader.read(65536):
            pass

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if self.mode == "blackhole":
                    continue  # silently dropped: the peer waits for an answer
                if self.mode == "slow":
                    await asyncio.sleep(self.slow_seconds)
                writer.write(data)
                await writer.drain()
        finally:
            self._writers.discard(writer)
            writer.close()
