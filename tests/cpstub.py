"""A control plane on a loopback socket that answers from a script: the sidecar's side of the
control-plane boundary when what answers there misbehaves (a bug, a proxy in between, another
version). Real sockets and HTTP/1.1; only the answers are made up."""

from __future__ import annotations

import asyncio

__all__ = ["ScriptedControlPlane"]


class ScriptedControlPlane:
    """A loopback HTTP/1.1 server answering each request path's prefix with a scripted
    (status, body) in turn (the last one repeats); it records the paths asked."""

    def __init__(self, script: dict[str, list[tuple[int, bytes]]]) -> None:
        self.script = script
        self.paths: list[str] = []
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                length = next(
                    (int(v) for k, _, v in (h.partition(":") for h in lines[1:])
                     if k.lower() == "content-length"),
                    0,
                )  # fmt: skip
                await reader.readexactly(length)
                self.paths.append(path)
                prefix = next(p for p in self.script if path.startswith(p))
                answers = self.script[prefix]
                status, body = answers.pop(0) if len(answers) > 1 else answers[0]
                writer.write(
                    b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n%s" % (status, len(body), body)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def close(self) -> None:
        for writer in self.writers:
            writer.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
