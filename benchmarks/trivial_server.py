"""A trivial keep-alive HTTP/1.1 responder: the generator-ceiling scenario's target.

It reads each request's head, skips its body by Content-Length and answers a fixed 202 (200
for GET) at once: no routing, no JSON, no validation. Whatever rate wrk reaches against it on
the same core as the daemon is the most the load generator can offer, so a daemon figure far
below it is the daemon's own. Raw asyncio protocol, not http.server: that one is slower than
the daemon and would prove nothing.

    python benchmarks/trivial_server.py [--port 0] [--max-seconds 900]

Prints ``listening on 127.0.0.1:PORT`` (the daemon's wording, so the harness reads both the
same way) and stops on SIGTERM/SIGINT or after --max-seconds, whichever comes first.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

_ACCEPTED = (
    b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: 21\r\n\r\n"
    b'{"status":"accepted"}'
)
_OK = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n"
    b'{"status":"ok"}\n'
)
_BAD = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
_MAX_HEAD = 64 * 1024


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0


class Responder(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.head = b""  # the unparsed start of a request head
        self.body_left = 0  # body bytes of the current request still to skip
        self.reply = _ACCEPTED

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        position = 0
        replies: list[bytes] = []
        while position < len(data):
            if self.body_left:
                # Bodies are skipped, never buffered: a 150 kB batch costs no copy.
                taken = min(self.body_left, len(data) - position)
                self.body_left -= taken
                position += taken
                if not self.body_left:
                    replies.append(self.reply)
                continue
            chunk = self.head + data[position:]
            end = chunk.find(b"\r\n\r\n")
            if end < 0:
                if len(chunk) > _MAX_HEAD:
                    self.transport.write(_BAD)
                    self.transport.close()
                    return
                self.head = chunk
                break
            head = chunk[:end]
            position += end + 4 - len(self.head)
            self.head = b""
            try:
                self.body_left = _content_length(head)
            except ValueError:
                self.transport.write(_BAD)
                self.transport.close()
                return
            self.reply = _OK if head.startswith(b"GET ") else _ACCEPTED
            if not self.body_left:
                replies.append(self.reply)
        if replies:
            self.transport.write(b"".join(replies))


async def serve(port: int, max_seconds: float) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server = await loop.create_server(Responder, "127.0.0.1", port, backlog=1024)
    bound = server.sockets[0].getsockname()[1]
    print(f"listening on 127.0.0.1:{bound}", flush=True)
    async with server:
        try:
            # Bounded lifetime: a crashed harness must not leave it running for ever.
            await asyncio.wait_for(stop.wait(), timeout=max_seconds)
        except TimeoutError:
            print("stopping after --max-seconds", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=900.0)
    options = parser.parse_args()
    if options.max_seconds <= 0:
        parser.error("--max-seconds must be positive")
    asyncio.run(serve(options.port, options.max_seconds))


if __name__ == "__main__":
    main()
