"""MLLP (the Minimal Lower Layer Protocol): each message framed as <VT> message <FS><CR>, on a TCP connection.

The server keeps a connection open for as many messages as the sender
wants, answering each in order (those that arrive together are handled
together).  Bytes outside a frame are dropped (some senders send keep-alive
newlines), but a connection that sends only noise,
or a frame larger than the limit, is closed: past that point the framing
cannot be trusted.  A frame cut short by the connection closing is not a
message and is not applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable

from sandbox.hl7v2.er7 import MAX_MESSAGE_BYTES

START = b"\x0b"
END = b"\x1c\x0d"
MAX_NOISE_BYTES = 4096  # bytes outside any frame before the connection is deemed not to speak MLLP

_log = logging.getLogger("ehr_sandbox.hl7v2")

Handler = Callable[[bytes], Awaitable[bytes | None]]


def frame(message: bytes | str) -> bytes:
    data = message.encode("utf-8") if isinstance(message, str) else message
    return START + data + END


class FrameTooLarge(Exception):
    pass


class FrameReader:
    """Splits a byte stream into MLLP frames."""

    def __init__(self, limit: int = MAX_MESSAGE_BYTES) -> None:
        self.limit = limit
        self.buffer = bytearray()
        self.in_frame = False
        self.noise = 0

    def feed(self, data: bytes) -> list[bytes]:
        self.buffer += data
        frames: list[bytes] = []
        while True:
            if not self.in_frame:
                start = self.buffer.find(START)
                if start < 0:
                    self.noise += len(self.buffer)
                    self.buffer.clear()
                    break
                self.noise += start
                del self.buffer[: start + 1]
                self.in_frame = True
            end = self.buffer.find(END)
            if end < 0:
                if len(self.buffer) > self.limit + 1:
                    raise FrameTooLarge(f"an MLLP frame exceeded {self.limit} bytes")
                break
            body = bytes(self.buffer[:end])
            del self.buffer[: end + 2]
            self.in_frame = False
            restart = body.rfind(START)
            if restart >= 0:  # a new start block inside a frame: the earlier frame was cut short
                body = body[restart + 1 :]
            if len(body) > self.limit:
                raise FrameTooLarge(f"an MLLP frame exceeded {self.limit} bytes")
            frames.append(body)
        if self.noise > MAX_NOISE_BYTES:
            raise FrameTooLarge("the connection sent bytes that are not MLLP frames")
        return frames


class ListenError(Exception):
    """A server that cannot take its port (in use, or not ours to take); ``name`` says which server."""

    def __init__(self, name: str, host: str, port: int, reason: str) -> None:
        super().__init__(f"the {name} cannot listen on {host}:{port} ({reason})")
        self.name = name


def listening_socket(name: str, host: str, port: int, *, backlog: int = 100) -> socket.socket:
    """A TCP socket listening on ``host:port``, or ``ListenError`` saying why not (``name``: which server)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        # SO_REUSEADDR, as asyncio's reuse_address: a restart may take the port while old connections close.
        return socket.create_server((host, port), family=family, backlog=backlog)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)  # without create_server's own wording
        raise ListenError(name, host, port, reason.lower()) from None


class Server:
    """An asyncio MLLP server on the app's event loop; ``handler`` answers each message (None: no reply).
    ``name`` says what it is in a ``ListenError``."""

    def __init__(
        self, handler: Handler, host: str, port: int, *, limit: int = MAX_MESSAGE_BYTES, name: str = "MLLP server"
    ) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self.limit = limit
        self.name = name
        self._socket: socket.socket | None = None
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task] = set()

    def bind(self) -> None:
        """Take the port now, before an event loop serves it: a port in use is a ``ListenError`` here, which a
        command can say in one line, rather than a failure inside the app's start.  ``start`` binds if this
        was not called."""
        if self._socket is not None or self._server is not None:
            return
        self._socket = listening_socket(self.name, self.host, self.port)
        self.port = self._socket.getsockname()[1]  # the real one when asked for port 0

    async def start(self) -> None:
        if self._server is not None:
            return
        self.bind()
        self._server = await asyncio.start_server(self._serve, sock=self._socket)
        self._socket = None  # the asyncio server owns it now, and closes it

    async def stop(self) -> None:
        if self._socket is not None:  # bound, never started
            self._socket.close()
            self._socket = None
        if self._server is not None:
            self._server.close()
            for task in list(self._connections):
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        frames = FrameReader(self.limit)
        peer = writer.get_extra_info("peername")
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                messages = frames.feed(data)
                if len(messages) == 1:
                    replies = [await self.handler(messages[0])]
                else:
                    # A sender that did not wait for each answer: its messages are handled together (an inbound
                    # batch shares one transaction), in order, and answered in order.
                    replies = await asyncio.gather(*(self.handler(message) for message in messages))
                for reply in replies:
                    if reply is not None:
                        writer.write(frame(reply))
                if any(reply is not None for reply in replies):
                    await writer.drain()
        except FrameTooLarge as exc:
            _log.info("hl7v2 closing %s: %s", peer, exc)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()


class Client:
    """A blocking MLLP client: one connection, messages sent one at a time, each reply awaited."""

    def __init__(self, host: str, port: int, *, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.frames = FrameReader()
        self.pending: list[bytes] = []

    def send(self, message: bytes | str) -> bytes:
        self.sock.sendall(frame(message))
        return self.receive()

    def receive(self) -> bytes:
        while not self.pending:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the peer closed the connection before acknowledging")
            self.pending.extend(self.frames.feed(data))
        return self.pending.pop(0)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
