"""Turning a window of curated traces into train / dev / holdout examples.

The window is first reduced to one row per distinct input (copies collapse to their first
submission), so no input can straddle two splits. The split then follows time within each label:
of each label's distinct inputs, ordered by when they were first seen, the earliest go to train,
the next to dev, the latest to holdout (the configured percentages, exact integer rounding). Why
(docs/optimizers.md, "How the window is split", measured by ``benchmarks/peer.py``):

- a question that keeps coming back was first seen early, so it is taught; a hash of the input
  put each frequent fixed-text question in one split forever, and a quarter of the questions of the
  sample traffic were never taught;
- every label with more than one distinct input has training rows;
- the held-out inputs are the newest ones, which none of the earlier rows repeat: what they score
  estimates how the program does on the inputs it has not seen, the next days' new traffic.
"""

from __future__ import annotations

import json
from typing import Any

import dspy
import polars as pl
from eth_utils import keccak

from teleprompt_assets.core.config import SamplingConfig, SplitConfig
from teleprompt_assets.core.spec import ProgramSpec
from teleprompt_assets.curate import quality
from teleprompt_assets.training import label_noise

SPLITS = ("train", "dev", "holdout")


def normalized_inputs(inputs_json: str, fields: tuple[str, ...]) -> str:
    inputs = json.loads(inputs_json)
    return "\x1f".join(" ".join(str(inputs.get(f, "")).lower().split()) for f in fields)


def _shares(sizes: dict[str, int], percent: int, room: dict[str, int]) -> dict[str, int]:
    """``percent`` of the rows, apportioned to the labels by largest remainder (ties by label), each
    label getting at most its ``room``: the total is the nearest whole number of rows (halves up)."""
    total = sum(sizes.values())
    target = (2 * percent * total + 100) // 200
    share = {label: min(room[label], percent * n // 100) for label, n in sizes.items()}
    order = sorted(sizes, key=lambda label: (-(percent * sizes[label] % 100), label))
    left = target - sum(share.values())
    while left > 0 and any(share[label] < room[label] for label in order):
        for label in order:
            if left > 0 and share[label] < room[label]:
                share[label] += 1
                left -= 1
    return share


def label_quotas(sizes: dict[str, int], split: SplitConfig) -> dict[str, tuple[int, int, int]]:
    """How many of each label's distinct inputs go to train, dev and holdout. Holdout and dev get
    their share of all rows to the nearest row, apportioned over the labels; every label keeps at
    least one training row."""
    holdout = _shares(sizes, split.holdout, {label: max(n - 1, 0) for label, n in sizes.items()})
    dev = _shares(sizes, split.dev, {label: max(n - 1 - holdout[label], 0) for label, n in sizes.items()})
    return {label: (n - dev[label] - holdout[label], dev[label], holdout[label]) for label, n in sizes.items()}


def split_sizes(size: int, split: SplitConfig) -> tuple[int, int, int]:
    """:func:`label_quotas` of one label."""
    return label_quotas({"": size}, split)[""]


def _split_at(rank: int, quota: tuple[int, int, int]) -> str:
    train, dev, _ = quota
    return "train" if rank < train else "dev" if rank < train + dev else "holdout"


def split_at(rank: int, size: int, split: SplitConfig) -> str:
    """The split of the ``rank``-th (0-based, oldest first) of ``size`` distinct inputs of one label."""
    return _split_at(rank, split_sizes(size, split))


def assign_splits(table: pl.DataFrame, split: SplitConfig) -> pl.DataFrame:
    """``table`` (one row per distinct input, in time order) with its ``split`` column, per label.

    After the label check (a ``label_issue`` column), the shares are of the credible rows only, the
    rows each split actually gives the optimizer and the evaluation; a flagged row, used by no
    split, takes the split of its place in time."""
    stratum = table["label"].fill_null("").to_list() if "label" in table.columns else [""] * table.height
    usable = table["label_issue"].is_null().to_list() if "label_issue" in table.columns else [True] * table.height
    sizes: dict[str, int] = {}
    for label, ok in zip(stratum, usable, strict=True):
        sizes[label] = sizes.get(label, 0) + ok
    quotas = label_quotas(sizes, split)
    seen: dict[str, int] = {}
    splits = []
    for label, ok in zip(stratum, usable, strict=True):
        rank = seen.get(label, 0)
        splits.append(_split_at(rank, quotas[label]) if sizes[label] else "train")
        seen[label] = rank + ok
    return table.with_columns(pl.Series("split", splits, pl.String))


def training_table(curated: pl.DataFrame, spec: ProgramSpec, near: bool = True) -> pl.DataFrame:
    """One row per distinct input, with a ``split`` column (:func:`assign_splits`).

    Re-submissions collapse to the earliest trace, across the whole window: identical inputs, and
    with ``near`` (``quality.dedupe_near``) inputs equal up to case, punctuation and spacing
    (curation's ``dedupe_key``), so a copy made on a later day earns its copier nothing and leaves
    the first submitter's row in place. When contributors disagree on the label of one input, the
    label most of them gave wins (earliest trace on a tie), so a demo or a holdout example never
    carries two answers for one question. The kept row keeps the group's first-seen time, which
    orders the split.
    """
    if curated.is_empty():
        return curated.with_columns(pl.lit(None, pl.String).alias("input_key"), pl.lit(None, pl.String).alias("split"))
    keys = [normalized_inputs(s, spec.input_fields) for s in curated["inputs"]]
    table = curated.with_columns(pl.Series("input_key", keys, pl.String)).sort("timestamp_ms", "trace_id")
    near = near and "dedupe_key" in table.columns
    table = table.with_columns((pl.coalesce("dedupe_key", "input_key") if near else pl.col("input_key")).alias("_group"))
    votes = table.group_by("_group", "expectations").agg(pl.len().alias("votes"), pl.col("timestamp_ms").min().alias("first_seen"))
    winners = votes.sort(["votes", "first_seen"], descending=[True, False]).unique(subset=["_group"], keep="first")
    first_seen = table.group_by("_group").agg(pl.col("timestamp_ms").min().alias("_first_seen"))
    table = table.join(winners.select("_group", "expectations"), on=["_group", "expectations"], how="semi", nulls_equal=True)
    table = table.unique(subset=["_group"], keep="first", maintain_order=True).join(first_seen, on="_group", how="left")
    table = table.sort("_first_seen", "timestamp_ms", "trace_id").drop("_group", "_first_seen")
    return assign_splits(table, spec.config.split)


def window_table(curated: pl.DataFrame, spec: ProgramSpec, near: bool = True) -> tuple[pl.DataFrame, label_noise.LabelCheck]:
    """The window as the optimizer and the evaluation see it: one row per distinct input, the label
    check's marks, and splits whose shares are of the rows the check left usable."""
    checked = label_noise.check_labels(training_table(curated, spec, near=near), spec)
    return assign_splits(checked.table, spec.config.split), checked


def sample_train(table: pl.DataFrame, sampling: SamplingConfig, now_ms: int) -> pl.DataFrame:
    """The table with its train split drawn by ``sampling``; dev and holdout rows stay whole.

    Only training is sampled: evaluation must see the window as it is, or a strategy that favours
    good outcomes would also flatter the scores. Rows left out did not feed the optimizer, so they
    are dropped here and never enter the attestation's dataRoot. ``now_ms`` is the partition's end,
    not the wall clock, so a re-run draws the same rows.
    """
    if sampling.strategy == "all" or sampling.size is None or table.is_empty():
        return table
    train = table.filter(pl.col("split") == "train")
    kept = quality.sample(train, sampling, now_ms)
    return pl.concat([kept, table.filter(pl.col("split") != "train")], how="vertical").sort("timestamp_ms", "trace_id")


def capped(rows: pl.DataFrame, cap: int | None) -> pl.DataFrame:
    """At most ``cap`` rows: those with the smallest trace hash, in time order.

    Scoring 40,000 held-out examples twice costs LM calls without sharpening a 1% decision much
    (the bootstrap interval shrinks with the square root of n). Trace hashes are keccak outputs, so
    the smallest ones are a uniform sample, and the same window always yields the same sample.
    """
    if cap is None or rows.height <= cap:
        return rows
    return rows.sort("trace_hash").head(cap).sort("timestamp_ms", "trace_id")


def examples(table: pl.DataFrame, spec: ProgramSpec, split: str) -> list[dspy.Example]:
    """DSPy examples carrying provenance fields along.

    Outputs come from the ground truth (expectations) when the metric has one, otherwise from what
    was logged (outcome-only programs learn from outputs that earned good outcomes).
    """
    from_outputs = spec.config.metric.kind == "outcome_model"
    cap = {"holdout": spec.config.split.max_holdout, "dev": spec.config.split.max_dev}.get(split)
    out = []
    rows = table.filter(pl.col("split") == split)
    if "label_issue" in rows.columns:  # a label the window's evidence contradicts is neither taught nor tested on
        rows = rows.filter(pl.col("label_issue").is_null())
    for row in capped(rows, cap).iter_rows(named=True):
        inputs = json.loads(row["inputs"])
        labels = json.loads(row["outputs"] if from_outputs else row["expectations"])
        fields = {f: inputs[f] for f in spec.input_fields}
        fields |= {f: labels[f] for f in spec.output_fields if f in labels}
        if spec.computed_fields:  # what forward computed and returned (passages): a demo of the step that reads it needs it
            logged = json.loads(row["outputs"] or "{}")
            fields |= {f: logged[f] for f in spec.computed_fields if isinstance(logged, dict) and logged.get(f) not in (None, "")}
        extra = {"outcome": json.loads(row["feedback"]).get(spec.config.metric.outcome)} if from_outputs else {}
        example = dspy.Example(**fields, trace_id=row["trace_id"], trace_hash=row["trace_hash"], contributor=row["contributor"], **extra)
        out.append(example.with_inputs(*spec.input_fields))
    return out


def training_examples(table: pl.DataFrame, spec: ProgramSpec, split: str = "train") -> list[dspy.Example]:
    """What the optimizer may learn from in ``split``; for outcome-only programs, only the traces
    whose outcome was good (≥ 0.5), so demos show what worked rather than everything that was sent."""
    train = examples(table, spec, split)
    if spec.config.metric.kind != "outcome_model":
        return train
    return [ex for ex in train if isinstance(ex.get("outcome"), (bool, int, float)) and float(ex.get("outcome")) >= 0.5]


def dataset_hash(table: pl.DataFrame) -> str:
    """keccak256 over the sorted ``trace_hash:split`` lines: changes if any trace or its split does."""
    lines = sorted(f"{h}:{s}" for h, s in table.select("trace_hash", "split").iter_rows()) if len(table) else []
    return "0x" + keccak(text="\n".join(lines)).hex()


def sample_input(table: pl.DataFrame, spec: ProgramSpec) -> dict[str, Any]:
    """One held-out input, kept with a registered version: its MLflow input example, and what a
    rollback runs to check the version still answers."""
    rows = table.filter(pl.col("split") == "holdout").head(1)
    if not len(rows):
        return {f: "" for f in spec.input_fields}
    return {k: v for k, v in json.loads(rows["inputs"][0]).items() if k in spec.input_fields}
