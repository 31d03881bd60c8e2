"""Server-sent events, decoded incrementally from the bytes of a streamed response.

Only what OpenAI-compatible servers use: `data:` fields, events ended by a blank line.
Comments (`:`), `event:`, `id:` and `retry:` fields are skipped. This sits on the hot
path (one call per network read, thousands a second), so it works on bytes and splits
once per read on the event separator; the common event, one `data: ` line, costs a
prefix check and a slice. Anything else (CRLF line ends, several data lines, other
fields) takes a slower, complete path.
"""

from __future__ import annotations


def _event_data(event: bytes) -> bytes | None:
    """The data of one event in its general form (several lines, other fields)."""
    data: list[bytes] = []
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            # One optional space after the colon belongs to the syntax, not the value.
            data.append(line[6:] if line[5:6] == b" " else line[5:])
    if not data:
        return None
    return data[0] if len(data) == 1 else b"\n".join(data)


class SSEDecoder:
    """Feed it bytes as they arrive; it returns the payloads of the events completed."""

    __slots__ = ("_tail",)

    def __init__(self) -> None:
        self._tail = b""  # bytes after the last complete event

    def feed(self, chunk: bytes) -> list[bytes]:
        buf = self._tail + chunk if self._tail else chunk
        if b"\r" in buf:
            # CR and CRLF end lines too. A CR last may be half of a CRLF: keep it raw.
            held = b"\r" if buf.endswith(b"\r") else b""
            if held:
                buf = buf[:-1]
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        else:
            held = b""
        end = buf.rfind(b"\n\n")
        if end < 0:
            self._tail = buf + held
            return []
        self._tail = buf[end + 2 :] + held
        out: list[bytes] = []
        for event in buf[:end].split(b"\n\n"):
            if event.startswith(b"data: ") and b"\n" not in event:
                out.append(event[6:])  # the usual shape: one data line
            elif event:
                data = _event_data(event)
                if data is not None:
                    out.append(data)
        return out

    def flush(self) -> list[bytes]:
        """The stream ended: an event missing its final blank line still counts."""
        if not self._tail.strip():
            self._tail = b""
            return []
        return self.feed(b"\n\n")
