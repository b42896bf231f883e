"""The A/B comparison report: where the candidate wins and loses against the baseline.

Segments must be something a person can read. Grouping by the metric's field worked while that
field was a class label, but for an outcome-only program it is the free-text reply, and the report
became one row per example. So (:func:`for_program`):
- ``metric.report_by`` when configured (a categorical input or output, e.g. ``intent``);
- else the gold label, for ground-truth metrics whose field is categorical;
- else, and whenever the chosen field is not categorical by :func:`outcome_model.categories`
  (more than 12 distinct values, or more than half of them seen once), bands of the baseline's score (for an outcome
  model, its predicted outcome) in tenths, 0.00–0.10 to 0.90–1.00 (1 falls in the last), computed on
  the quantized scores. Fixed bands mean the same in every run ("the baseline's predicted chance
  was under 0.1"), and say where the candidate gained: on what the baseline did badly or well.
The flipped examples are keyed by trace id and example hash, with truncated input and outputs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from teleprompt_assets.core.spec import ProgramSpec
from teleprompt_assets.evaluate.deltaone import SCALE, Comparison, ExampleScore
from teleprompt_assets.training.outcome_model import MAX_CATEGORIES, categories, normalized

MAX_FLIPS = 20
BANDS = 10
BY_SCORE = "baseline score"
MISSING = "(none)"
KEY_CHARS, OUTPUT_CHARS, INPUT_CHARS = 40, 40, 60


@dataclass(frozen=True)
class Grouping:
    by: str
    keys: tuple[str, ...]
    why: str


@dataclass(frozen=True)
class Segment:
    key: str
    n: int
    baseline_sum: int
    candidate_sum: int
    wins: int
    losses: int

    @property
    def ties(self) -> int:
        return self.n - self.wins - self.losses


def band(q: int) -> str:
    i = min(q * BANDS // SCALE, BANDS - 1)
    return f"{i / BANDS:.2f}–{(i + 1) / BANDS:.2f}"


def by_baseline_score(scores: Sequence[ExampleScore], why: str) -> Grouping:
    return Grouping(BY_SCORE, tuple(band(s.baseline_q) for s in scores), why)


def choose(scores: Sequence[ExampleScore], name: str, values: Sequence[Any], source: str) -> Grouping:
    """Group by ``name`` when its values are categorical, else by baseline-score bands, saying why."""
    keys = [normalized(v) for v in values]
    if categories(keys) is not None:
        return Grouping(name, tuple(k or MISSING for k in keys), f"Grouped by {name} ({source}).")
    distinct = len({k for k in keys if k})
    return by_baseline_score(scores, f"{name} ({source}) has {distinct} distinct values in {len(keys)} examples, not a category "
                                     f"(at most {MAX_CATEGORIES}, at most half of them seen once): grouped by baseline score in bands of {1 / BANDS:.2f}.")


def for_program(spec: ProgramSpec, holdout: Sequence[Any], scores: Sequence[ExampleScore]) -> Grouping:
    metric = spec.config.metric
    if metric.report_by:
        return choose(scores, metric.report_by, [ex.get(metric.report_by) for ex in holdout], "metric.report_by")
    if metric.kind != "outcome_model" and metric.field:
        return choose(scores, metric.field, [ex.get(metric.field) for ex in holdout], "the gold label")
    return by_baseline_score(scores, f"Outcome-only program: grouped by the baseline's score, its predicted {metric.outcome}, "
                                     f"in bands of {1 / BANDS:.2f} (set metric.report_by to group by a categorical field).")


def inputs_of(spec: ProgramSpec, holdout: Sequence[Any]) -> list[str]:
    return [" · ".join(normalized(ex.get(f)) for f in spec.input_fields) for ex in holdout]


def segments(scores: Sequence[ExampleScore], keys: Sequence[str]) -> list[Segment]:
    grouped: dict[str, list[ExampleScore]] = defaultdict(list)
    for score, key in zip(scores, keys, strict=True):
        grouped[key].append(score)
    return [
        Segment(key, len(group), sum(s.baseline_q for s in group), sum(s.candidate_q for s in group),
                sum(s.candidate_q > s.baseline_q for s in group), sum(s.candidate_q < s.baseline_q for s in group))
        for key, group in sorted(grouped.items())
    ]


def _mean(total: int, n: int) -> str:
    return f"{total / (n * SCALE):.3f}" if n else "-"


def _cell(text: str, limit: int) -> str:
    text = normalized(text)
    return (text if len(text) <= limit else text[: limit - 1] + "…").replace("|", "\\|")


def markdown(comparison: Comparison, scores: Sequence[ExampleScore], grouping: Grouping, inputs: Sequence[str]) -> str:
    by = _cell(grouping.by, KEY_CHARS)
    lines = [
        f"**Baseline {comparison.baseline_mean:.4f} → candidate {comparison.candidate_mean:.4f}** on {comparison.n} held-out examples; "
        f"deltaPpm {comparison.delta_ppm}, {comparison.confidence_pct}% CI [{comparison.ci_low_ppm}, {comparison.ci_high_ppm}] ppm; "
        f"DeltaOne {'yes' if comparison.deltaone else 'no'}; wins {comparison.wins} / losses {comparison.losses} / ties {comparison.ties}.",
        "",
        grouping.why,
        "",
        f"| {by} | n | baseline | candidate | wins | losses | ties |",
        "|---|---|---|---|---|---|---|",
    ]
    for seg in segments(scores, grouping.keys):
        lines.append(f"| {_cell(seg.key, KEY_CHARS)} | {seg.n} | {_mean(seg.baseline_sum, seg.n)} | {_mean(seg.candidate_sum, seg.n)} | {seg.wins} | {seg.losses} | {seg.ties} |")
    flips = sorted((i for i, s in enumerate(scores) if s.baseline_q != s.candidate_q), key=lambda i: (-abs(scores[i].candidate_q - scores[i].baseline_q), i))
    if flips:
        lines += ["", f"Examples that flipped ({len(flips)}, largest change first, first {min(len(flips), MAX_FLIPS)}):", "",
                  f"| example | change | {by} | baseline | candidate | input |", "|---|---|---|---|---|---|"]
        for i in flips[:MAX_FLIPS]:
            s = scores[i]
            mark = "win" if s.candidate_q > s.baseline_q else "loss"
            lines.append(f"| {_cell(s.trace_id, KEY_CHARS)} `{s.example_hash[:10]}` | {mark} | {_cell(grouping.keys[i], KEY_CHARS)} "
                         f"| {_mean(s.baseline_q, 1)} {_cell(s.baseline_output, OUTPUT_CHARS)} | {_mean(s.candidate_q, 1)} {_cell(s.candidate_output, OUTPUT_CHARS)} "
                         f"| {_cell(inputs[i], INPUT_CHARS)} |")
    return "\n".join(lines)
