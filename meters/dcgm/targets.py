"""The pages a remote meter reads: `URL` or `NAME=URL` each, from an option list or a
file (one a line, `#` comments). A URL without a path gets `/metrics`."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from meters.base import MeterUnavailable


class TargetError(MeterUnavailable):
    """Bad targets; one line."""


def parse_target(text: str, owner: str, path: str = "/metrics") -> tuple[str, str]:
    """(name, url): the name given, else HOST:PORT."""
    text = text.strip()
    name = ""
    if "=" in text.split("://", 1)[0]:
        name, text = (p.strip() for p in text.split("=", 1))
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise TargetError(f"{owner}: a target must be http(s)://HOST:PORT[/PATH], got {text!r}")
    if parts.path in ("", "/", "/v1"):
        parts = parts._replace(path=path)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return name or netloc, urlunsplit(parts)


def read_targets_file(path: str, owner: str) -> list[str]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TargetError(f"{owner}: cannot read {path}: "
                          f"{getattr(exc, 'strerror', None) or exc}") from None
    out: list[str] = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) == 1:
            out.append(words[0])
        elif len(words) == 2:
            out.append(f"{words[1]}={words[0]}")  # "URL NAME"
        elif words:
            raise TargetError(f"{owner}: {path}: expected 'URL [NAME]', got {line.strip()!r}")
    if not out:
        raise TargetError(f"{owner}: {path} names no targets")
    return out


def redacted(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]))
