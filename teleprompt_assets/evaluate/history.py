"""A program's evaluations over time, as a person would rather look at them than read them.

Dagster keeps every day's ``evaluation_report`` as materialization metadata, one partition per
program and day; plotted as is, two programs share one line and one program's 0.47 followed by the
other's 0.41 reads as a regression. This module turns one program's days into a one-line verdict
(the DeltaOne badge), a markdown table for the Dagster UI and a self-contained HTML page (inline SVG,
no script) that MLflow's artifact viewer renders.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Day:
    day: str
    baseline: float  # held-out mean in [0, 1] of the program serving before the run
    candidate: float
    delta_ppm: int
    deltaone: bool
    holdout: int
    promoted: bool | None = None
    lm_calls: int | None = None  # the evaluation's
    answers_reused: int | None = None
    quarantine_rate: float | None = None  # the day's traffic, in [0, 1]
    compile_lm_calls: int | None = None
    projected_usd: float | None = None  # the compile's, at the configured cost model
    top_share_ppm: int | None = None  # the largest contributor's reward weight


def _cell(value: object, fmt: str = "{}") -> str:
    return "" if value is None else fmt.format(value)


def badge(day: Day) -> str:
    return "✅ DeltaOne" if day.deltaone else "❌ no DeltaOne"


def verdict(program: str, day: Day) -> str:
    """One line: what today's run found."""
    change = f"{day.delta_ppm / 10_000:+.1f}%"
    return f"**{program}** {day.day}: {badge(day)}: {day.baseline:.3f} → {day.candidate:.3f} ({change}) on {day.holdout} held-out examples"


def markdown(program: str, days: Sequence[Day], limit: int = 14) -> str:
    """The latest verdict, then the last ``limit`` days, newest first."""
    if not days:
        return f"**{program}**: no evaluation yet"
    ordered = sorted(days, key=lambda d: d.day, reverse=True)
    lines = [verdict(program, ordered[0]), "", "| day | baseline | candidate | change | DeltaOne | held-out | quarantined | LM calls (eval / compile) | reused | cost | top share |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for d in ordered[:limit]:
        lines.append(f"| {d.day} | {d.baseline:.3f} | {d.candidate:.3f} | {d.delta_ppm / 10_000:+.1f}% | {'✅' if d.deltaone else '❌'} | {d.holdout} | "
                     f"{_cell(d.quarantine_rate, '{:.1%}')} | {_cell(d.lm_calls)} / {_cell(d.compile_lm_calls)} | {_cell(d.answers_reused)} | "
                     f"{_cell(d.projected_usd, '${:.4f}')} | {_cell(None if d.top_share_ppm is None else d.top_share_ppm / 10_000, '{:.1f}%')} |")
    return "\n".join(lines)


def _polyline(points: Sequence[tuple[float, float]], color: str) -> str:
    return f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in points)}"/>'


def html_page(program: str, days: Sequence[Day]) -> str:
    """Scores of the serving program (baseline) and the candidate per day, DeltaOne days marked."""
    ordered = sorted(days, key=lambda d: d.day)
    width, height, pad = 640, 240, 32
    n = max(1, len(ordered) - 1)

    def xy(i: int, value: float) -> tuple[float, float]:
        return pad + i * (width - 2 * pad) / n, height - pad - value * (height - 2 * pad)

    base = [xy(i, d.baseline) for i, d in enumerate(ordered)]
    cand = [xy(i, d.candidate) for i, d in enumerate(ordered)]
    marks = "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="#1a7f37"><title>{html.escape(d.day)}: DeltaOne</title></circle>'
                    for (x, y), d in zip(cand, ordered, strict=True) if d.deltaone)
    labels = "".join(f'<text x="{x:.1f}" y="{height - 8}" font-size="10" text-anchor="middle">{html.escape(d.day[5:])}</text>'
                     for (x, _), d in zip(base, ordered, strict=True))
    grid = "".join(f'<line x1="{pad}" x2="{width - pad}" y1="{xy(0, v)[1]:.1f}" y2="{xy(0, v)[1]:.1f}" stroke="#ddd"/>'
                   f'<text x="4" y="{xy(0, v)[1] + 3:.1f}" font-size="10">{v:.1f}</text>' for v in (0, 0.25, 0.5, 0.75, 1))
    rows = "".join(f"<tr><td>{html.escape(d.day)}</td><td>{d.baseline:.3f}</td><td>{d.candidate:.3f}</td><td>{d.delta_ppm / 10_000:+.1f}%</td>"
                   f"<td>{'✅' if d.deltaone else '❌'}</td><td>{d.holdout}</td><td>{_cell(d.quarantine_rate, '{:.1%}')}</td>"
                   f"<td>{_cell(d.lm_calls)} / {_cell(d.compile_lm_calls)}</td><td>{_cell(d.projected_usd, '${:.4f}')}</td>"
                   f"<td>{_cell(None if d.top_share_ppm is None else d.top_share_ppm / 10_000, '{:.1f}%')}</td></tr>"
                   for d in reversed(ordered))
    latest = html.escape(verdict(program, ordered[-1]).replace("**", "")) if ordered else "no evaluation yet"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(program)}: evaluations over time</title>
<style>body{{font-family:sans-serif;margin:16px}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}</style></head>
<body><h2>{html.escape(program)}</h2><p>{latest}</p>
<svg width="{width}" height="{height}" role="img" aria-label="held-out scores per day">{grid}
{_polyline(base, "#888")}{_polyline(cand, "#0969da")}{marks}{labels}</svg>
<p><span style="color:#888">■</span> baseline (the serving program) <span style="color:#0969da">■</span> candidate <span style="color:#1a7f37">●</span> DeltaOne</p>
<table><tr><th>day</th><th>baseline</th><th>candidate</th><th>change</th><th>DeltaOne</th><th>held-out</th><th>quarantined</th>
<th>LM calls (eval / compile)</th><th>compile cost</th><th>top contributor share</th></tr>{rows}</table>
</body></html>
"""
