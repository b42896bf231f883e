"""When a registered candidate may become the serving version (``champion``), decided exactly.

The rules, in the order they are checked (the first that refuses gives the one-line reason):

1. **Rolled back stays out.** A version an operator rolled back is never promoted again.
2. **Enough evidence.** The candidate was scored on at least ``min_holdout`` held-out examples
   (per program, ``split.min_holdout``, default 20): below it one example moves the mean by more
   than five points, so the comparison says nothing. An empty window never gets this far: it
   compiles and registers nothing.
3. **Better, not equal.** C > B. A regression (C < B) is never promoted; a tie (C = B) keeps the
   incumbent: replacing the serving program needs a measured gain, and a tie is none. A program
   with ``promotion.require_significance`` also needs the bootstrap interval's lower bound above
   zero (off by default: a small window rarely reaches it, and the point estimate is what a plain
   comparison of means would go by; attestations always require it).
4. **Measured against what serves now.** The baseline the candidate beat must be the current
   champion (version 0 when there is none). After a manual rollback, or when another run promoted
   meanwhile, a candidate measured against another version is not promoted; the next run of its
   program measures against the new champion.
5. **Days take effect in order.** A candidate whose training window ends before the champion's
   does not replace it, so an older day's run finishing late never undoes a newer one.

Promotion after a manual rollback is therefore ordinary: the restored version is the champion,
later runs are measured against it, and a candidate that beats it (rules 2-5) replaces it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Candidate:
    version: int
    baseline_version: int
    baseline_sum: int
    candidate_sum: int
    n: int
    window_end: str
    rolled_back_at: str | None = None
    ci_low_ppm: int | None = None  # the bootstrap interval's lower bound of the relative gain


@dataclass(frozen=True)
class Champion:
    version: int
    window_end: str | None


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def decide(candidate: Candidate, champion: Champion | None, min_holdout: int, require_significance: bool = False) -> Decision:
    """Whether ``candidate`` replaces ``champion`` (None: nothing serves yet), and why in one line."""
    c, b, n = candidate.candidate_sum, candidate.baseline_sum, candidate.n
    serving = champion.version if champion is not None else 0
    if candidate.rolled_back_at:
        return Decision(False, f"not promoted: v{candidate.version} was rolled back at {candidate.rolled_back_at}")
    if serving == candidate.version:
        return Decision(True, f"v{candidate.version} is already the champion")
    if n < min_holdout:
        return Decision(False, f"not promoted: measured on {n} held-out examples, fewer than min_holdout={min_holdout}")
    if c < b:
        return Decision(False, f"not promoted: C={c} < B={b} on {n} holdout examples")
    if c == b:
        return Decision(False, f"not promoted: C={c} = B={b} on {n} holdout examples (a tie keeps the incumbent)")
    if require_significance and (candidate.ci_low_ppm is None or candidate.ci_low_ppm <= 0):
        low = "unknown" if candidate.ci_low_ppm is None else f"{candidate.ci_low_ppm} ppm"
        return Decision(False, f"not promoted: C={c} > B={b} on {n} holdout examples, but not significant (95% CI low {low}; promotion.require_significance)")
    if candidate.baseline_version != serving:
        return Decision(False, f"not promoted: measured against v{candidate.baseline_version}, but v{serving} serves now; the next run measures against it")
    if champion is not None and champion.window_end and candidate.window_end < champion.window_end:
        return Decision(False, f"not promoted: its window ends {candidate.window_end}, before the champion's ({champion.window_end})")
    return Decision(True, f"C={c} > B={b} on {n} holdout examples, measured against v{candidate.baseline_version}")
