"""A TCP proxy with a fault switch, for making a dependency slow or silent without touching it.

The chaos suite puts it between the sidecar and the trust aggregator: the aggregator itself only
knows how to be up or down (killed), while a real network also delays and swallows traffic.
Modes, switched live with :meth:`ChaosProxy.set_mode` (they apply to open connections too):

* ``pass``: bytes flow both ways untouched;
* ``delay``: every chunk, each way, is held ``delay_ms`` before it is passed on (order kept);
* ``blackhole``: connections are accepted and everything is read and dropped: the peer waits
  until its own timeout;
* ``refuse``: new connections are closed at once and open ones are cut.

It runs an asyncio loop in a daemon thread of the calling process; :meth:`stop` ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass, field

MODES = ("pass", "delay", "blackhole", "refuse")
CHUNK = 65536


@dataclass
class ChaosProxy:
    """Listens on 127.0.0.1:`port` (0 picks one) and forwards to 127.0.0.1:`target_port`."""

    target_port: int
    port: int = 0
    mode: str = "pass"
    delay_ms: int = 0
    connections: int = 0  # accepted so far
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _server: asyncio.AbstractServer | None = None
    _writers: set = field(default_factory=set)

    def start(self) -> "ChaosProxy":
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as e:  # noqa: BLE001 - reported to the starting thread
                failure.append(e)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name=f"chaos-proxy-{self.target_port}", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        return self

    def set_mode(self, mode: str, delay_ms: int = 0) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown proxy mode {mode!r}; expected one of {', '.join(MODES)}")
        self.mode, self.delay_ms = mode, delay_ms
        if mode == "refuse" and self._loop:
            self._loop.call_soon_threadsafe(self._cut_all)

    def stop(self) -> None:
        loop = self._loop
        if loop is None or self._thread is None:
            return

        async def close() -> None:
            if self._server:
                self._server.close()
            self._cut_all()
            loop.stop()

        with contextlib.suppress(RuntimeError):
            asyncio.run_coroutine_threadsafe(close(), loop)
        self._thread.join(10)
        self._loop = None

    def _cut_all(self) -> None:
        for w in list(self._writers):
            w.transport.abort()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.mode == "refuse":
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()  # the target is down: the peer sees its connection cut
            return
        self._writers.update((writer, up_writer))
        try:
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(CHUNK):
                mode = self.mode
                if mode == "blackhole":
                    continue
                if mode == "refuse":
                    break
                if mode == "delay" and self.delay_ms:
                    await asyncio.sleep(self.delay_ms / 1000)
                writer.write(data)
                await writer.drain()
        # One side finished: cut both so the other pump ends too.
        writer.transport.abort()
