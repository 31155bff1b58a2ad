"""A session's stdout and stderr: read for the whole session, cut into cells by markers."""

from __future__ import annotations

import asyncio
import codecs
import logging

from runtime.sandbox.capped import CappedOutput
from runtime.sandbox.protocol import OutputCallback

logger = logging.getLogger(__name__)

_LINE_PIECE = 8192  # longest piece of a line handed to on_output at once


class CellStream:
    """One stream's output for one cell: capped copy plus line streaming."""

    def __init__(self, name: str, marker: bytes, limit: int,
                 on_output: OutputCallback | None, *, keep: int = 0) -> None:
        self.name = name
        self.marker = marker
        self.output = CappedOutput(name, limit=limit, keep=keep)
        self.on_output = on_output
        self.done = asyncio.Event()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._line = ""

    def add(self, data: bytes) -> None:
        if fits := self.output.add(data):
            self._stream(self._decoder.decode(fits))

    def _emit(self, line: str) -> None:
        if self.on_output is None:
            return
        try:
            self.on_output(self.name, line)
        except Exception:
            logger.exception("on_output callback failed; no more output goes to it")
            self.on_output = None

    def _stream(self, text: str) -> None:
        if self.on_output is None:
            return
        self._line += text
        *lines, self._line = self._line.split("\n")
        for line in lines:
            self._emit(line)
        while len(self._line) > _LINE_PIECE:
            self._emit(self._line[:_LINE_PIECE])
            self._line = self._line[_LINE_PIECE:]

    def finish(self) -> None:
        if self.done.is_set():
            return
        self._stream(self._decoder.decode(b"", final=True))
        if self._line:
            self._emit(self._line)
            self._line = ""
        self.done.set()



class StreamPump:
    """Reads one of the sandbox's output pipes for the whole session.

    Output between cells (a background process still printing) is dropped; output after
    the stream's cap is read and dropped too, so the writer never blocks on a full pipe.
    """

    def __init__(self, name: str, reader: asyncio.StreamReader) -> None:
        self.name = name
        self.reader = reader
        self.cell: CellStream | None = None
        self.pending = b""
        self.stray = bytearray()  # last bytes seen outside cells (bwrap's start errors)
        self.task = asyncio.create_task(self._pump(), name=f"sandbox-{name}")

    def begin(self, cell: CellStream) -> None:
        self.pending = b""
        self.cell = cell

    def end(self) -> None:
        """Close the current cell without its marker (cell killed or stream closed)."""
        if self.cell is not None:
            self.cell.add(self.pending)
            self.cell.finish()
        self.cell = None
        self.pending = b""

    def _feed(self, chunk: bytes) -> None:
        cell = self.cell
        if cell is None:
            self.stray = (self.stray + chunk)[-4096:]
            return
        data = self.pending + chunk
        idx = data.find(cell.marker)
        if idx >= 0:
            cell.add(data[:idx])
            cell.finish()
            self.cell = None
            self.pending = b""
            return
        # A marker may be split across reads: hold back only a tail that could start
        # one, so ordinary output streams without delay.
        keep = 0
        first = cell.marker[:1]
        start = data.find(first, max(0, len(data) - len(cell.marker) + 1))
        while start >= 0:
            if cell.marker.startswith(data[start:]):
                keep = len(data) - start
                break
            start = data.find(first, start + 1)
        cell.add(data[:len(data) - keep])
        self.pending = data[len(data) - keep:]

    async def _pump(self) -> None:
        while chunk := await self.reader.read(1 << 16):
            self._feed(chunk)
        self.end()
