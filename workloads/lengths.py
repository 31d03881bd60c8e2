"""Length distributions: how many tokens a prompt part or an answer has, per draw.

A length is one of

    Fixed(n)                       always n (draws nothing from the generator)
    Uniform(lo, hi)                an integer uniform in [lo, hi] (`rng.randint`, one draw)
    Exponential(mean, lo, hi)      exponential of mean `mean`, rounded, clipped to [lo, hi]
    LogNormal(mean, spread, lo, hi)
                                   lognormal whose mean is `mean` and whose log has
                                   standard deviation `spread` (sigma); rounded, clipped
    Empirical(values)              one of `values`, each as likely (a list or a file)

`mean` is the mean of the distribution before clipping; clipping moves values below
`lo` up to `lo` and values above `hi` down to `hi` (it does not redraw). `lo` defaults
to the parameter's floor (1, or 0 where an empty part is allowed) and `hi` to
`MAX_TOKENS`. A lognormal may be given a coefficient of variation `cv` instead of
`spread`: sigma = sqrt(ln(1 + cv^2)) (cv 1 is sigma 0.83).

Every draw takes a `random.Random` and returns an int within [floor, MAX_TOKENS], so a
seeded generator gives the same lengths every time.

Written forms (`parse_length`), for `-p KEY=VALUE` and TOML strings:

    256  |  fixed:256
    uniform:100-800  |  uniform:min=100,max=800
    exp:200  |  exp:mean=200,max=4000           (also `exponential`)
    lognormal:mean=300,spread=0.8,max=4000  |  lognormal:300,0.8  |  lognormal:mean=300,cv=1
    list:100,200,300
    file:lengths.txt                            (numbers separated by spaces, commas or
                                                 newlines; `#` starts a comment)

and as TOML tables: `{ dist = "lognormal", mean = 300, spread = 0.8, max = 4000 }`,
`{ dist = "uniform", min = 100, max = 800 }`, `{ dist = "fixed", value = 256 }`,
`{ dist = "exp", mean = 200 }`, `{ dist = "list", values = [100, 200] }`,
`{ dist = "list", file = "lengths.txt" }`. A bad one is a `LengthError` of one line
starting with the name the caller gives ("sequential: parameter output_tokens: ...").
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workloads.params import MAX_TOKENS

MAX_SPREAD = 5.0  # sigma of a lognormal's log; e^5 = 148x between a sigma's steps
MAX_CV = 100.0
MAX_VALUES = 1_000_000  # values of an empirical list or file
MAX_FILE_BYTES = 16 * 1024 * 1024
#: The quantile an unbounded distribution is estimated at where a size must be bounded
#: before anything runs (a TOML workflow's prompt sizes).
ESTIMATE_QUANTILE = 0.999
_Z_999 = 3.090232  # standard normal quantile at 0.999

DISTS = ("fixed", "uniform", "exp", "lognormal", "list")
_ALIASES = {"exponential": "exp", "empirical": "list", "file": "list"}
_KEYS = {
    "fixed": ("value",),
    "uniform": ("min", "max"),
    "exp": ("mean", "min", "max"),
    "lognormal": ("mean", "spread", "cv", "min", "max"),
    "list": ("values", "file"),
}


class LengthError(ValueError):
    """A bad length distribution; the message is one line naming the parameter."""


def _clip(x: float, lo: int, hi: int) -> int:
    return int(min(max(math.floor(x + 0.5), lo), hi))


@dataclass(frozen=True, slots=True)
class Fixed:
    n: int

    def sample(self, rng: random.Random) -> int:
        return self.n

    @property
    def upper(self) -> int:
        return self.n

    def estimate_max(self) -> int:
        return self.n

    def __str__(self) -> str:
        return f"fixed:{self.n}"


@dataclass(frozen=True, slots=True)
class Uniform:
    lo: int
    hi: int

    def sample(self, rng: random.Random) -> int:
        return rng.randint(self.lo, self.hi)

    @property
    def upper(self) -> int:
        return self.hi

    def estimate_max(self) -> int:
        return self.hi

    def __str__(self) -> str:
        return f"uniform:{self.lo}-{self.hi}"


@dataclass(frozen=True, slots=True)
class Exponential:
    mean: float
    lo: int
    hi: int

    def sample(self, rng: random.Random) -> int:
        return _clip(rng.expovariate(1.0 / self.mean), self.lo, self.hi)

    @property
    def upper(self) -> int:
        return self.hi

    def estimate_max(self) -> int:
        q = -self.mean * math.log(1.0 - ESTIMATE_QUANTILE)
        return _clip(q, self.lo, self.hi)

    def __str__(self) -> str:
        return f"exp:mean={self.mean:g},min={self.lo},max={self.hi}"


@dataclass(frozen=True, slots=True)
class LogNormal:
    mean: float
    spread: float  # sigma of the log
    lo: int
    hi: int

    @property
    def mu(self) -> float:
        return math.log(self.mean) - self.spread ** 2 / 2

    def sample(self, rng: random.Random) -> int:
        return _clip(rng.lognormvariate(self.mu, self.spread), self.lo, self.hi)

    @property
    def upper(self) -> int:
        return self.hi

    def estimate_max(self) -> int:
        return _clip(min(math.exp(self.mu + _Z_999 * self.spread), 1e18), self.lo, self.hi)

    def __str__(self) -> str:
        return (f"lognormal:mean={self.mean:g},spread={self.spread:g},min={self.lo},"
                f"max={self.hi}")


@dataclass(frozen=True, slots=True)
class Empirical:
    values: tuple[int, ...]

    def sample(self, rng: random.Random) -> int:
        return rng.choice(self.values)

    @property
    def upper(self) -> int:
        return max(self.values)

    def estimate_max(self) -> int:
        return max(self.values)

    def __str__(self) -> str:
        shown = ",".join(str(v) for v in self.values[:8])
        return f"list:{shown}" + (f",...({len(self.values)} values)"
                                  if len(self.values) > 8 else "")


Length = Fixed | Uniform | Exponential | LogNormal | Empirical
#: What `wattflow doctor` says of a length parameter.
LENGTH_HELP = "tokens: N or fixed:N, uniform:LO-HI, exp:MEAN, lognormal:mean=M,spread=S, list:A,B"
#: The type of a workload parameter that is a length: N, a written form or a table.
LengthValue = int | str | dict[str, Any]


# -- parsing ----------------------------------------------------------------------------
def parse_length(value: Any, name: str, *, floor: int = 1,
                 base_dir: str | Path | None = None) -> Length:
    """A length from an int (fixed), a written form ("lognormal:mean=300,spread=0.8") or
    a table ({dist = "lognormal", ...}). `name` starts any error; `floor` is the least
    length allowed (1, or 0); a `file` is read relative to `base_dir` (default: the
    working directory)."""
    if isinstance(value, Length):
        _check_int(value.upper, name, "max", floor)
        return value
    if isinstance(value, bool):
        raise LengthError(f"{name}: must be a whole number or a distribution, got {value}")
    if isinstance(value, int | float):
        return Fixed(_whole(value, name, "", floor))
    if isinstance(value, str):
        dist, table = _split_text(value.strip(), name)
        return _from_table(dist, table, name, floor, base_dir)
    if isinstance(value, Mapping):
        table = dict(value)
        if "dist" not in table:
            raise LengthError(f"{name}: a distribution table needs dist = "
                              f"{' | '.join(repr(d) for d in DISTS)}")
        dist = table.pop("dist")
        if not isinstance(dist, str):
            raise LengthError(f"{name}: dist must be one of {', '.join(DISTS)}, got {dist!r}")
        return _from_table(dist, table, name, floor, base_dir)
    raise LengthError(f"{name}: must be a whole number or a distribution, got {_show(value)}")


def _show(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _split_text(text: str, name: str) -> tuple[str, dict[str, Any]]:
    """`DIST:ARGS` into the distribution's name and a table of its keys."""
    if not text:
        raise LengthError(f"{name}: empty; give N or DIST:ARGS (e.g. lognormal:mean=300,"
                          "spread=0.8)")
    dist, colon, args = text.partition(":")
    dist = dist.strip().lower()
    if not colon:
        try:
            n = float(text)
        except ValueError:
            raise LengthError(f"{name}: {_show(text)} is not a length (N, fixed:N,"
                              " uniform:LO-HI, exp:MEAN, lognormal:mean=M,spread=S,"
                              " list:A,B,C, file:PATH)") from None
        return "fixed", {"": n}
    args = args.strip()
    if dist == "file":
        return "list", {"file": args}
    canon = _ALIASES.get(dist, dist)
    if canon not in DISTS:
        raise LengthError(f"{name}: unknown distribution {_show(dist)}"
                          f" (use {', '.join(DISTS)}, file)")
    parts = [p.strip() for p in args.split(",")] if args else []
    if canon == "list":
        return "list", {"values": [_number(p, name, "list value") for p in parts]}
    if parts and all("=" not in p for p in parts):  # positional: fixed:N, exp:M, ...
        if canon == "uniform":
            if len(parts) != 1 or "-" not in parts[0].lstrip("-"):
                raise LengthError(f"{name}: uniform is uniform:LO-HI, got {_show(args)}")
            lo, _, hi = parts[0].partition("-")
            return "uniform", {"min": _number(lo, name, "min"), "max": _number(hi, name, "max")}
        keys = {"fixed": ("value",), "exp": ("mean",), "lognormal": ("mean", "spread")}[canon]
        if len(parts) != len(keys):
            raise LengthError(f"{name}: {canon}:{','.join(k.upper() for k in keys)} takes"
                              f" {len(keys)} value{'s' if len(keys) > 1 else ''},"
                              f" got {_show(args)}")
        return canon, {k: _number(p, name, k) for k, p in zip(keys, parts, strict=True)}
    table: dict[str, Any] = {}
    for p in parts:
        key, eq, raw = p.partition("=")
        key = key.strip().lower()
        if not eq:
            raise LengthError(f"{name}: expected KEY=VALUE in {_show(args)}, got {_show(p)}")
        if key in table:
            raise LengthError(f"{name}: {key} given twice")
        table[key] = _number(raw, name, key)
    return canon, table


def _number(text: str, name: str, key: str) -> float:
    try:
        return float(text.strip())
    except ValueError:
        raise LengthError(f"{name}: {key} must be a number, got {_show(text.strip())}") from None


def _label(name: str, key: str) -> str:
    """"NAME: KEY", or NAME alone for a plain number (key "")."""
    return f"{name}: {key}" if key else name


def _finite(v: Any, name: str, key: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise LengthError(f"{_label(name, key)} must be a number, got {_show(v)}")
    if not math.isfinite(v):
        raise LengthError(f"{_label(name, key)} must be a finite number, got {v}")
    return float(v)


def _whole(v: Any, name: str, key: str, floor: int) -> int:
    if not key and not (isinstance(v, int | float) and not isinstance(v, bool)
                        and math.isfinite(v) and float(v).is_integer()):
        raise LengthError(f"{name} must be an integer or a distribution, got {_show(v)}")
    x = _finite(v, name, key)
    if not x.is_integer():
        raise LengthError(f"{_label(name, key)} must be a whole number, got {v:g}")
    return _check_int(int(x), name, key, floor)


def _check_int(n: int, name: str, key: str, floor: int) -> int:
    if not floor <= n <= MAX_TOKENS:
        raise LengthError(f"{_label(name, key)} = {n} is out of range ({floor}-{MAX_TOKENS})")
    return n


def _positive(v: Any, name: str, key: str, hi: float) -> float:
    x = _finite(v, name, key)
    if not 0 < x <= hi:
        top = str(int(hi)) if float(hi).is_integer() else f"{hi:g}"
        raise LengthError(f"{name}: {key} = {x:g} is out of range (more than 0, up to {top})")
    return x


def _from_table(dist: str, table: dict[str, Any], name: str, floor: int,
                base_dir: str | Path | None) -> Length:
    canon = _ALIASES.get(dist.lower(), dist.lower())
    if canon not in DISTS:
        raise LengthError(f"{name}: unknown distribution {_show(dist)} (use {', '.join(DISTS)})")
    known = _KEYS[canon]
    for key in table:
        if key == "" and canon == "fixed":
            continue
        if key not in known:
            raise LengthError(f"{name}: {canon} has no {_show(key)} (known: {', '.join(known)})")

    def need(key: str) -> Any:
        if key not in table:
            raise LengthError(f"{name}: {canon} needs {key}")
        return table[key]

    if canon == "fixed":
        if "" in table:  # a plain number
            return Fixed(_whole(table[""], name, "", floor))
        return Fixed(_whole(need("value"), name, "value", floor))
    if canon == "list":
        if ("values" in table) == ("file" in table):
            raise LengthError(f"{name}: list needs exactly one of values and file")
        if "file" in table:
            values = _read_values(table["file"], name, base_dir)
        else:
            values = table["values"]
            if not isinstance(values, list | tuple):
                raise LengthError(f"{name}: list values must be a list of whole numbers")
        if not values:
            raise LengthError(f"{name}: list has no values")
        if len(values) > MAX_VALUES:
            raise LengthError(f"{name}: list has {len(values)} values, more than {MAX_VALUES}")
        return Empirical(tuple(_whole(v, name, "list value", floor) for v in values))
    if canon == "uniform":
        need("min")
        need("max")
    lo = _whole(table.get("min", floor), name, "min", floor)
    hi = _whole(table.get("max", MAX_TOKENS), name, "max", floor)
    if hi < lo:
        raise LengthError(f"{name}: max {hi} is below min {lo}")
    if canon == "uniform":
        return Uniform(lo, hi)
    mean = _positive(need("mean"), name, "mean", MAX_TOKENS)
    if canon == "exp":
        return Exponential(mean, lo, hi)
    if ("spread" in table) == ("cv" in table):
        raise LengthError(f"{name}: lognormal needs exactly one of spread (sigma of the log)"
                          " and cv (coefficient of variation)")
    if "spread" in table:
        spread = _positive(table["spread"], name, "spread", MAX_SPREAD)
    else:
        cv = _positive(table["cv"], name, "cv", MAX_CV)
        spread = math.sqrt(math.log1p(cv * cv))
    return LogNormal(mean, spread, lo, hi)


def _read_values(path: Any, name: str, base_dir: str | Path | None) -> list[float]:
    if not isinstance(path, str) or not path:
        raise LengthError(f"{name}: list file must be a path")
    p = Path(path)
    if base_dir is not None and not p.is_absolute():
        p = Path(base_dir) / p
    try:
        if not p.is_file():
            raise LengthError(f"{name}: list file {_show(str(p))}: no such file")
        with open(p, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise LengthError(f"{name}: list file {_show(str(p))}: cannot read:"
                          f" {exc.strerror or exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise LengthError(f"{name}: list file {_show(str(p))}: larger than"
                          f" {MAX_FILE_BYTES >> 20} MiB")
    out: list[float] = []
    for lineno, line in enumerate(raw.decode("utf-8", "replace").splitlines(), start=1):
        for tok in line.split("#", 1)[0].replace(",", " ").split():
            try:
                out.append(float(tok))
            except ValueError:
                raise LengthError(f"{name}: list file {_show(str(p))} line {lineno}:"
                                  f" {_show(tok)} is not a number") from None
    return out


def param_length(value: Any, workload: str, name: str, *, floor: int = 1) -> Length:
    """A workload parameter as a length; errors say "WORKLOAD: parameter NAME: ..."."""
    return parse_length(value, f"{workload}: parameter {name}", floor=floor)
