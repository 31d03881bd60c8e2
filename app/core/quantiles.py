"""Quantiles of a stream (latency, TTFT, TPOT): a DDSketch, or exact on request.

The live statistics keep one set of quantiles per stage, per time slot, per knob
segment and per other grouping, for runs of millions of requests: a sorted list of
every value would grow with the run. DDSketch (the `ddsketch` package, DataDog's
reference implementation) was chosen over HdrHistogram and t-digest because its
guarantee is the one wanted here: every quantile within a *relative* error alpha of
the exact value, whatever the distribution (t-digest's error is rank error, largest in
the tails we read: p99); it is mergeable exactly (bin counts add), so stages, endpoints
and time slots combine; and its size is bounded by the span of the values in log
space, not by their count, with no integer range to choose up front (HdrHistogram
needs a unit and a highest trackable value).

`Sketch.q` interpolates between the sketch's values at the two ranks around
`p * (n - 1)`, as `ExactQuantiles.q` (numpy's "linear") does between the exact order
statistics: for values >= 0 each is within RELATIVE_ACCURACY of its exact counterpart,
so the interpolated quantile is too. `ExactQuantiles` keeps every value (for
`report --exact`); both have the same interface.
"""

from __future__ import annotations

import math
from typing import Protocol

from ddsketch import LogCollapsingLowestDenseDDSketch

#: The sketch's relative accuracy: a quantile is within 1% of the exact value.
RELATIVE_ACCURACY = 0.01

#: At most this many bins per sign (positive, negative values). With 1% accuracy a bin
#: spans 2% of its value: 2,048 bins cover 1e-9 s to 1e8 s, far beyond any latency.
#: Past it the lowest bins are merged, which costs accuracy only at the lowest
#: quantiles, and memory stays bounded whatever is fed.
BIN_LIMIT = 2048


class QuantileSet(Protocol):
    """A stream's quantiles: values added one at a time, read at any time."""

    def add(self, x: float) -> None: ...

    def q(self, p: float) -> float | None:
        """The p-quantile (0 <= p <= 1) of the values added; None when there are none."""
        ...

    def merge(self, other: QuantileSet) -> None:
        """Add every value of `other` (of the same class) to this set."""
        ...

    def copy(self) -> QuantileSet: ...

    def __len__(self) -> int: ...


class Sketch:
    """A DDSketch with RELATIVE_ACCURACY and at most BIN_LIMIT bins per sign."""

    __slots__ = ("_s",)

    def __init__(self) -> None:
        self._s = LogCollapsingLowestDenseDDSketch(RELATIVE_ACCURACY, BIN_LIMIT)

    def add(self, x: float) -> None:
        if x == x and not math.isinf(x):  # NaN and infinities carry no rank
            self._s.add(x)

    def __len__(self) -> int:
        return int(self._s.count)

    def _at_rank(self, rank: int, n: int) -> float:
        # The library reads the value at rank q * (n - 1), rounding down: ask for a
        # half-integer rank so that floating-point error cannot land on the rank below.
        if rank >= n - 1:
            v = self._s.get_quantile_value(1.0)
        else:
            v = self._s.get_quantile_value((rank + 0.5) / (n - 1))
        return float(v) if v is not None else 0.0

    def q(self, p: float) -> float | None:
        n = len(self)
        if n == 0:
            return None
        if n == 1:
            return self._at_rank(0, 1)
        pos = min(max(p, 0.0), 1.0) * (n - 1)
        lo = int(pos)
        v_lo = self._at_rank(lo, n)
        frac = pos - lo
        if frac == 0.0:
            return v_lo
        return v_lo + (self._at_rank(lo + 1, n) - v_lo) * frac

    def merge(self, other: QuantileSet) -> None:
        assert isinstance(other, Sketch)
        self._s.merge(other._s)

    def copy(self) -> Sketch:
        out = Sketch()
        out._s.merge(self._s)
        return out

    @property
    def bins(self) -> int:
        """Bins held (both signs): what the sketch's memory is proportional to."""
        return int(self._s._store.length() + self._s._negative_store.length())


class ExactQuantiles:
    """Every value, sorted when read: exact, and growing with the stream."""

    __slots__ = ("_sorted", "_v")

    def __init__(self) -> None:
        self._v: list[float] = []
        self._sorted = True

    def add(self, x: float) -> None:
        if x == x and not math.isinf(x):
            self._v.append(x)
            self._sorted = False

    def __len__(self) -> int:
        return len(self._v)

    def q(self, p: float) -> float | None:
        v = self._v
        if not v:
            return None
        if not self._sorted:
            v.sort()
            self._sorted = True
        pos = min(max(p, 0.0), 1.0) * (len(v) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(v) - 1)
        return v[lo] + (v[hi] - v[lo]) * (pos - lo)

    def merge(self, other: QuantileSet) -> None:
        assert isinstance(other, ExactQuantiles)
        if other._v:
            self._v.extend(other._v)
            self._sorted = False

    def copy(self) -> ExactQuantiles:
        out = ExactQuantiles()
        out._v = list(self._v)
        out._sorted = self._sorted
        return out


def make_quantiles(exact: bool) -> QuantileSet:
    return ExactQuantiles() if exact else Sketch()
