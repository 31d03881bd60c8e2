"""`wattflow cat SESSION...`: every record of a session whole, one JSON object per line.

Version-2 sessions leave out what the reader restores (docs/session-format.md), and
`.jsonl.zst` ones are compressed; `jq` sees only what was written. `cat` writes what
every other command reads: the header, each event with all its fields, and the end
record, in the order the reader gives them (version 1's lines, whatever the file's
version). `wattflow cat S.jsonl.zst | jq -c 'select(.phase == "finished")'`.
"""

from __future__ import annotations

import argparse
import sys
from typing import IO

import orjson

from app.core.events import Event
from app.core.session_reader import SessionError, open_session

_OPTS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS


def _write(out: IO[bytes], ev: Event) -> None:
    d = ev.to_dict()
    if d["kind"] == "session":
        d["version"] = 1  # whole lines: what is written is a version-1 session
    out.write(orjson.dumps(d, default=str, option=_OPTS))


def run(args: argparse.Namespace) -> int:
    out = sys.stdout.buffer
    try:
        for name in args.sessions:
            stream = open_session(name)
            _write(out, stream.header)
            for ev in stream:
                _write(out, ev)
            if stream.end is not None:
                _write(out, stream.end)
            for warning in stream.warnings:
                print(f"wattflow: warning: {stream.path}: {warning}", file=sys.stderr)
        out.flush()
    except SessionError as exc:
        out.flush()
        print(f"wattflow: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `wattflow cat S | head`: the reader has all it wanted
        return 0
    return 0
