"""Where the faster of two weight formats changes: one definition for the model and the measurements.

A crossover is known to lie between two batches: `lo`, the last batch (measured or evaluated) where
`before` is faster, and `hi`, the first where `after` is faster (batches where the two tie, within
TIE_RTOL, are skipped: they keep the previous winner). Inside that interval an estimate places it, by
a named method:
  - log-log interpolation: log(time a / time b) taken as linear in log(batch) between lo and hi and
    set to zero (the only choice where only the end points were measured);
  - bisection: the model evaluated at integer batches in (lo, hi] down to the first batch `after`
    wins (possible where times can be evaluated anywhere: the roofline model);
  - a tie at a batch in between, where one was seen: that batch.

Reports print `Crossover.describe()`: "between 256 and 1024 (estimate ~458, log-log interpolation)".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Sequence

TIE_RTOL = 1e-9  # relative time difference under which two formats tie

METHOD_LOGLOG = "log-log interpolation"
METHOD_BISECT = "bisection"
METHOD_TIE = "tie"


@dataclass(frozen=True)
class Crossover:
    a: str                      # the pair asked about
    b: str
    lo: int                     # last batch where `before` is faster
    hi: int                     # first batch where `after` is faster
    before: str                 # faster format up to lo
    after: str                  # faster format from hi
    estimate: float | None      # batch where the two take the same time, inside [lo, hi]
    method: str                 # METHOD_LOGLOG | METHOD_BISECT | METHOD_TIE
    basis: str = "measured"     # what the times are: "measured" | "roofline model"

    @property
    def method_detail(self) -> str:
        """The estimate's method in words, e.g. 'log-log interpolation of the time ratio between measured
        batches 256 and 1024'."""
        where = "measured batches" if self.basis == "measured" else f"batches of the {self.basis}"
        if self.method == METHOD_LOGLOG:
            return f"log-log interpolation of the time ratio between {where} {self.lo} and {self.hi}"
        if self.method == METHOD_BISECT:
            return f"bisection of the {self.basis} to the first integer batch between {self.lo} and {self.hi}"
        return f"the {self.basis} times tie at batch {self.estimate:.0f}, between {where} {self.lo} and {self.hi}"

    def describe(self) -> str:
        est = f"estimate ~{self.estimate:.0f}, {self.method}" if self.estimate is not None else "no estimate"
        return f"between {self.lo} and {self.hi} ({est})"

    # The names `moeprof roofline --json` has always printed: the table batch where `winner` first wins,
    # the one before it, and the bisected integer batch.
    @property
    def winner(self) -> str:
        return self.after

    @property
    def loser(self) -> str:
        return self.before

    @property
    def batch(self) -> int:
        return self.hi

    @property
    def prev_batch(self) -> int:
        return self.lo

    @property
    def batch_exact(self) -> int | None:
        return int(self.estimate) if self.method == METHOD_BISECT and self.estimate is not None else None

    def as_record(self) -> dict[str, object]:
        return {"a": self.a, "b": self.b, "batch": self.batch, "prev_batch": self.prev_batch, "winner": self.winner,
                "loser": self.loser, "batch_exact": self.batch_exact,
                "lo": self.lo, "hi": self.hi, "before": self.before, "after": self.after,
                "estimate": self.estimate, "method": self.method, "method_detail": self.method_detail,
                "basis": self.basis, "text": self.describe()}


def winner(t_a: float, t_b: float, a: str, b: str, rtol: float = TIE_RTOL) -> str | None:
    """The faster of a and b; None where they tie (or a time is not a finite positive number)."""
    if not (math.isfinite(t_a) and math.isfinite(t_b) and t_a > 0 and t_b > 0):
        return None
    if abs(t_a - t_b) <= rtol * min(t_a, t_b):
        return None
    return a if t_a < t_b else b


def _loglog(lo: int, hi: int, r_lo: float, r_hi: float) -> float:
    """Batch where log(ratio) crosses zero, linear in log(batch) between (lo, r_lo) and (hi, r_hi)."""
    t = r_lo / (r_lo - r_hi)
    return float(math.exp(math.log(lo) + t * (math.log(hi) - math.log(lo))))


def find(batches: Sequence[int], t_a: Sequence[float], t_b: Sequence[float], a: str, b: str,
         basis: str = "measured", rtol: float = TIE_RTOL) -> list[Crossover]:
    """Every change of the faster of a and b along `batches` (ascending), each with its interval and a
    log-log estimate (or the batch of a tie seen inside the interval)."""
    out: list[Crossover] = []
    last: tuple[str, int, float] | None = None  # winner, batch, log ratio
    tie_at: float | None = None
    for batch, ta, tb in zip(batches, t_a, t_b):
        ta, tb = float(ta), float(tb)
        w = winner(ta, tb, a, b, rtol)
        if w is None:
            if last is not None and tie_at is None and math.isfinite(ta) and math.isfinite(tb) and ta > 0 and tb > 0:
                tie_at = float(batch)
            continue
        r = math.log(ta / tb)
        if last is not None and w != last[0]:
            lo, hi = last[1], int(batch)
            if tie_at is not None:
                est, method = tie_at, METHOD_TIE
            else:
                est, method = _loglog(lo, hi, last[2], r), METHOD_LOGLOG
            out.append(Crossover(a, b, lo, hi, last[0], w, est, method, basis))
        last, tie_at = (w, int(batch), r), None
    return out


def bisect(c: Crossover, time_of: Callable[[str, int], float], rtol: float = TIE_RTOL) -> Crossover:
    """The estimate set to the first integer batch in (lo, hi] where `after` is faster, evaluating
    `time_of(format, batch)` (a model: anything that gives a time at any batch); lo and hi stay the
    batches that bracket it in the table."""
    lo, hi = c.lo, c.hi  # `before` (or a tie) at lo, `after` at hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if winner(time_of(c.a, mid), time_of(c.b, mid), c.a, c.b, rtol) == c.after:
            hi = mid
        else:
            lo = mid
    return replace(c, estimate=float(hi), method=METHOD_BISECT)


def winner_runs(wins: Sequence[tuple[int, str]]) -> list[tuple[str, list[int]]]:
    """Consecutive batches (ascending) won by the same format: [(format, [batches])]. The summaries of
    `roofline` and `analyze` both read their "who wins where" from this."""
    runs: list[tuple[str, list[int]]] = []
    for batch, fmt in wins:
        if runs and runs[-1][0] == fmt:
            runs[-1][1].append(int(batch))
        else:
            runs.append((fmt, [int(batch)]))
    return runs


def doubling_grid(lo: int, hi: int) -> list[int]:
    """Powers of two from lo to hi (both powers of two): the batches the model is evaluated at."""
    return [2 ** i for i in range(int(math.log2(lo)), int(math.log2(hi)) + 1)]
