"""One output stream of one cell, bounded: its head and tail inline, its bytes whole aside.

Every backend keeps a cell's stdout and stderr this way (``SandboxLimits``):

- ``output_bytes`` of it go inline into ``CellResult.stdout`` / ``stderr``: all of it
  when it fits, else its first and last halves joined by a visible marker that says how
  many bytes were dropped (``stdout_truncated`` and ``stdout_dropped`` say so too);
- ``raw_output_bytes`` of it are kept as written (``CellResult.stdout_raw``), for a
  caller to store as an artifact: the whole of a long output, and raw bytes that are not
  UTF-8 (inline text decodes them with U+FFFD replacement, never failing).

The memory held is bounded by those two limits, whatever the cell writes.
"""

from __future__ import annotations


def dropped_marker(name: str, dropped: int, total: int) -> str:
    """The line that stands where the middle of a long output was cut out."""
    return f"\n…[{dropped:,} bytes of {name} dropped here: it was {total:,} bytes]…\n"


class CappedOutput:
    """Collects one stream of one cell within ``limit`` inline and ``keep`` raw bytes."""

    def __init__(self, name: str, *, limit: int, keep: int = 0) -> None:
        self.name = name
        self.limit = limit
        self.keep = keep
        self.total = 0
        self._head = bytearray()  # the first `limit` bytes (all of it while it fits)
        self._tail = bytearray()  # the last limit // 2 bytes
        self._raw = bytearray()

    def add(self, data: bytes) -> bytes:
        """Take the next bytes; return the part that fits inline (for live streaming)."""
        self.total += len(data)
        if self.keep and len(self._raw) < self.keep:
            self._raw += data[:self.keep - len(self._raw)]
        fits = data[:max(self.limit - len(self._head), 0)]
        self._head += fits
        half = self.limit // 2
        if half:
            self._tail += data[-half:]
            if len(self._tail) > half:
                del self._tail[:len(self._tail) - half]
        return fits

    @property
    def truncated(self) -> bool:
        return self.total > self.limit

    @property
    def dropped(self) -> int:
        """Bytes cut out of the middle of the inline text (0 when it all fits)."""
        return self.total - self.limit if self.truncated else 0

    def text(self) -> str:
        """The inline text: all of it, or head + marker + tail (UTF-8, invalid bytes as U+FFFD)."""
        if not self.truncated:
            return self._head.decode("utf-8", errors="replace")
        half = self.limit // 2
        head = bytes(self._head[:self.limit - half]).decode("utf-8", errors="replace")
        tail = bytes(self._tail).decode("utf-8", errors="replace")
        return head + dropped_marker(self.name, self.dropped, self.total) + tail

    def raw(self) -> bytes:
        """The bytes as written, up to ``keep`` of them."""
        return bytes(self._raw)
