"""The endpoints of the `openai` engine and the client-side policy that picks one.

Several OpenAI-compatible servers (replicas of one model, or a router in front of
them) are given as `url` (one or a list: `--url A --url B`) or a file of them
(`urls_file`: one `URL [NAME]` a line, `#` comments). Each has a name (the file's, else
`HOST:PORT`) that the session records on every request served there.

Policies:
- `round_robin`: the live endpoints in turn.
- `least_outstanding`: the live endpoint with the fewest requests in flight (ties: the
  first given).
- `affinity`: the same workflow stays on one endpoint, so a server's prefix cache keeps
  the workflow's shared prompt; chosen by rendezvous hashing of the workflow id over the
  live endpoints, so losing an endpoint moves only its own workflows.

An endpoint that cannot be connected to is marked lost; the engine probes it and marks
it back when it answers. When every endpoint is lost the requests still go to one (the
least recently lost), so the user sees the server's own error, not a guess.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

POLICIES = ("round_robin", "least_outstanding", "affinity")
MAX_ENDPOINTS = 1024


class EndpointError(ValueError):
    """Bad endpoints (a URL, the file); one line."""


def base_url(url: Any) -> str:
    if not isinstance(url, str) or not url.strip():
        raise EndpointError("option url is required (e.g. http://127.0.0.1:8000)")
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise EndpointError(f"url must be http(s)://HOST[:PORT], got {url!r}")
    # Users paste the API base (".../v1") as often as the server root: accept both.
    return url[: -len("/v1")] if url.endswith("/v1") else url


def redact(url: str) -> str:
    """The URL without user:password@, for anything that gets recorded."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


@dataclass(slots=True, eq=False)
class Endpoint:
    name: str
    url: str  # the server's root (no /v1), credentials included if given
    shown_url: str  # without credentials: what is recorded and said
    index: int = 0
    outstanding: int = 0  # requests in flight here
    lost: bool = False
    lost_at: float = 0.0
    lost_reason: str = ""
    requests: int = 0  # sent here (attempts)
    failovers: int = 0  # requests moved away from here when it was lost
    times_lost: int = 0
    hash_key: bytes = field(default=b"", repr=False)
    devices: list[str] = field(default_factory=list)  # the GPUs (or nodes) serving it

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "url": self.shown_url}
        if self.devices:
            out["devices"] = list(self.devices)
        return out


def read_urls_file(path: str) -> list[tuple[str, str | None]]:
    """(url, name or None) per line of an endpoints file: `URL [NAME [DEVICES]]`, where
    DEVICES (comma-separated meter devices or node names) are the GPUs serving it, for
    the energy attribution; the name then carries them as `NAME|DEVICES`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise EndpointError(f"urls_file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise EndpointError(f"urls_file {path}: not UTF-8 text") from None
    out: list[tuple[str, str | None]] = []
    for n, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) > 3:
            raise EndpointError(f"urls_file {path} line {n}: expected 'URL [NAME [DEVICES]]',"
                                f" got {line.strip()!r}")
        name = words[1] if len(words) >= 2 else None
        if len(words) == 3:
            name = f"{name}|{words[2]}"
        out.append((words[0], name))
    if not out:
        raise EndpointError(f"urls_file {path}: no endpoints in it")
    return out


def make_endpoints(given: list[tuple[str, str | None]]) -> list[Endpoint]:
    if len(given) > MAX_ENDPOINTS:
        raise EndpointError(f"{len(given)} endpoints: at most {MAX_ENDPOINTS}")
    out: list[Endpoint] = []
    names: set[str] = set()
    urls: set[str] = set()
    for i, (raw, name) in enumerate(given):
        url = base_url(raw)
        shown = redact(url)
        if url in urls:
            raise EndpointError(f"endpoint {shown} is given twice")
        urls.add(url)
        devices: list[str] = []
        if name and "|" in name:
            name, listed = name.split("|", 1)
            devices = [d.strip() for d in listed.split(",") if d.strip()]
        name = name or urlsplit(shown).netloc
        if name in names:
            name = f"{name}#{i}"
        names.add(name)
        out.append(Endpoint(name=name, url=url, shown_url=shown, index=i,
                            hash_key=name.encode(), devices=devices))
    return out


class Router:
    """Picks an endpoint for each request by the policy; knows which are lost."""

    def __init__(self, endpoints: list[Endpoint], policy: str) -> None:
        if policy not in POLICIES:
            raise EndpointError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
        self.endpoints = endpoints
        self.policy = policy
        self._turn = itertools.count()

    def live(self) -> list[Endpoint]:
        return [e for e in self.endpoints if not e.lost]

    def pick(self, workflow_id: str, exclude: set[Endpoint] | None = None) -> Endpoint | None:
        """The endpoint for a request of `workflow_id`, not one of `exclude` (tried
        already); None when every endpoint is excluded."""
        pool = [e for e in self.endpoints if not e.lost and (not exclude or e not in exclude)]
        if not pool:
            rest = [e for e in self.endpoints if not exclude or e not in exclude]
            if not rest:
                return None
            # All lost: try the one lost longest ago (the likeliest to be back).
            return min(rest, key=lambda e: e.lost_at)
        if len(pool) == 1:
            return pool[0]
        if self.policy == "least_outstanding":
            return min(pool, key=lambda e: e.outstanding)
        if self.policy == "affinity":
            wid = workflow_id.encode()
            return max(pool, key=lambda e: hashlib.blake2b(wid + b"\0" + e.hash_key,
                                                           digest_size=8).digest())
        return pool[next(self._turn) % len(pool)]
