"""The A/B comparison report: where the candidate wins and loses against the baseline.

Segments are the ground-truth label of each held-out example (the metric's field), so a reader
sees which classes improved, which regressed, and the individual examples that flipped.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from teleprompt_assets.evaluate import SCALE, Comparison, ExampleScore

MAX_FLIPS = 20


@dataclass(frozen=True)
class Segment:
    label: str
    n: int
    baseline_sum: int
    candidate_sum: int
    wins: int
    losses: int

    @property
    def ties(self) -> int:
        return self.n - self.wins - self.losses


def segments(scores: Sequence[ExampleScore], labels: Sequence[str]) -> list[Segment]:
    grouped: dict[str, list[ExampleScore]] = defaultdict(list)
    for score, label in zip(scores, labels, strict=True):
        grouped[label].append(score)
    return [
        Segment(label, len(group), sum(s.baseline_q for s in group), sum(s.candidate_q for s in group),
                sum(s.candidate_q > s.baseline_q for s in group), sum(s.candidate_q < s.baseline_q for s in group))
        for label, group in sorted(grouped.items())
    ]


def _mean(total: int, n: int) -> str:
    return f"{total / (n * SCALE):.3f}" if n else "-"


def markdown(comparison: Comparison, scores: Sequence[ExampleScore], labels: Sequence[str], messages: Sequence[str]) -> str:
    lines = [
        f"**Baseline {comparison.baseline_mean:.4f} → candidate {comparison.candidate_mean:.4f}** on {comparison.n} held-out examples; "
        f"deltaPpm {comparison.delta_ppm}, {comparison.confidence_pct}% CI [{comparison.ci_low_ppm}, {comparison.ci_high_ppm}] ppm; "
        f"DeltaOne {'yes' if comparison.deltaone else 'no'}; wins {comparison.wins} / losses {comparison.losses} / ties {comparison.ties}.",
        "",
        "| label | n | baseline | candidate | wins | losses | ties |",
        "|---|---|---|---|---|---|---|",
    ]
    for seg in segments(scores, labels):
        lines.append(f"| {seg.label} | {seg.n} | {_mean(seg.baseline_sum, seg.n)} | {_mean(seg.candidate_sum, seg.n)} | {seg.wins} | {seg.losses} | {seg.ties} |")
    flips = [(s, label, msg) for s, label, msg in zip(scores, labels, messages, strict=True) if s.baseline_q != s.candidate_q]
    if flips:
        lines += ["", f"Examples that flipped ({len(flips)}, first {min(len(flips), MAX_FLIPS)}):", "",
                  "| trace | label | baseline | candidate | input |", "|---|---|---|---|---|"]
        for s, label, msg in flips[:MAX_FLIPS]:
            mark = "win" if s.candidate_q > s.baseline_q else "loss"
            text = " ".join(msg.split())[:80].replace("|", "\\|")
            lines.append(f"| {s.trace_id} ({mark}) | {label} | {s.baseline_output} | {s.candidate_output} | {text} |")
    return "\n".join(lines)
