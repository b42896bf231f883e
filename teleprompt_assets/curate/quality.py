"""Data quality for curated traces (docs/data-quality.md): configurable rules, each rejection a reason.

:func:`curate` runs the trace contract (:func:`teleprompt_assets.curate.validation.validate`) and then the
quality rules below, in this order; a row is quarantined by the first rule it fails, with a reason
code and a detail, so ``read == accepted + quarantined`` always holds and every raw column
(contributor included) survives into one of the two tables.

1. contract (``validation.REASONS``)          6. exact duplicates          (``duplicate_exact``)
2. required metrics (``missing_score``)   7. near duplicates           (``near_duplicate``)
3. outcome thresholds (``below_threshold``) 8. contributor share cap   (``contributor_cap``)
4. outcome outliers (``outlier_score``)   9. label class share cap     (``class_cap``)
5. payload size outliers (``outlier_payload``)

Accepted rows gain ``scores`` (JSON: every outcome normalized to [0, 1]), ``quality_weight``
(weighted mean of the normalized outcomes present), ``label`` (ground-truth class) and
``dedupe_key``. Sampling strategies for the training set are pure functions at the bottom.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

import polars as pl

from teleprompt_assets.core.config import QualityConfig, SamplingConfig, TrustPolicy
from teleprompt_assets.core.spec import ProgramSpec
from teleprompt_assets.curate import validation

QUALITY_REASONS: dict[str, str] = {
    "missing_score": "a metric listed in required_metrics has no valid value",
    "below_threshold": "a normalized outcome is below its configured minimum",
    "outlier_score": "a numeric outcome is a robust-z outlier within the partition",
    "outlier_payload": "inputs + outputs are far larger than the partition's median",
    "duplicate_exact": "same inputs and outputs as an earlier trace",
    "near_duplicate": "same normalized input text as an earlier trace",
    "contributor_cap": "the contributor already holds its maximum share of the window",
    "class_cap": "the label class already holds its maximum share of the window",
}
EXTRA_SCHEMA: dict[str, pl.DataType] = {"scores": pl.String, "quality_weight": pl.Float64, "label": pl.String, "dedupe_key": pl.String}
ACCEPTED_SCHEMA: dict[str, pl.DataType] = {**validation.CURATED_SCHEMA, **EXTRA_SCHEMA}


@dataclass
class Curation:
    accepted: pl.DataFrame
    quarantined: pl.DataFrame
    reasons: dict[str, int] = field(default_factory=dict)
    identity: dict[str, int] = field(default_factory=dict)  # validation.check's counts: signed, retagged, labels ignored...

    @property
    def read(self) -> int:
        return self.accepted.height + self.quarantined.height


def _quarantine(frame: pl.DataFrame, mask: pl.Expr, reason: str, detail: pl.Expr | str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split off the rows where ``mask`` holds, with ``reason`` and ``detail`` (evaluated on the whole frame)."""
    flagged = frame.with_columns(mask.fill_null(False).alias("_bad"), (pl.lit(detail) if isinstance(detail, str) else detail).cast(pl.String).alias("_detail"))
    bad = flagged.filter(pl.col("_bad")).with_columns(pl.lit(reason).alias("reason"), pl.col("_detail").alias("detail"))
    return flagged.filter(~pl.col("_bad")).drop("_bad", "_detail"), _quarantine_columns(bad)


def _quarantine_columns(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` in the quarantine table's columns; the signature evidence, which accepted rows no
    longer carry (validation folded it into their columns), is empty for rows a quality rule sets aside."""
    return frame.select([pl.col(c) if c in frame.columns else pl.lit(None, t).alias(c) for c, t in validation.QUARANTINE_SCHEMA.items()])


def _scores(feedback: pl.Series, config: QualityConfig) -> tuple[pl.DataFrame, list[str]]:
    """Per distinct feedback JSON (few), the numeric value of every metric: booleans become 0/1."""
    distinct = feedback.unique().to_list()
    parsed = [json.loads(f) if f else {} for f in distinct]
    names = sorted({k for p in parsed for k in p})
    rows = {"feedback": distinct}
    for name in names:
        rows[f"_m:{name}"] = [float(p[name]) if name in p and p[name] is not None else None for p in parsed]
    return pl.DataFrame(rows, schema={"feedback": pl.String, **{f"_m:{n}": pl.Float64 for n in names}}), names


def _normalized(name: str, config: QualityConfig) -> pl.Expr:
    col = pl.col(f"_m:{name}")
    if config.normalize == "rank":
        return ((col.rank("average") - 1) / (col.count() - 1).clip(lower_bound=1)).fill_nan(None)
    lo, hi = config.score_ranges.get(name, (0.0, 1.0))
    return ((col - lo) / (hi - lo if hi > lo else 1.0)).clip(0.0, 1.0)


def _text_key(spec: ProgramSpec, config: QualityConfig) -> pl.Expr:
    parts = []
    for name in spec.input_fields:
        text = pl.col("inputs").str.json_path_match(f"$['{name}']").fill_null("").str.normalize("NFKC").str.to_lowercase()
        if config.near_mask_digits:
            text = text.str.replace_all(r"\d+", "0")
        parts.append(text.str.replace_all(r"[^\p{L}\p{N}]+", " ").str.strip_chars())
    return pl.concat_str(parts, separator="\x1f")


def _share_cap(counts: list[int], share: float) -> int | None:
    """Largest per-group count K with K <= share * sum(min(c, K)); None when no K >= 1 is feasible."""
    best = None
    lo, hi = 1, max(counts, default=0)
    while lo <= hi:
        k = (lo + hi) // 2
        if k <= share * sum(min(c, k) for c in counts):
            best, lo = k, k + 1
        else:
            hi = k - 1
    return best


def _cap(frame: pl.DataFrame, by: str, share: float | None, reason: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    if share is None or share >= 1 or frame.is_empty():
        return frame, _quarantine_columns(frame.head(0).with_columns(pl.lit(None, pl.String).alias("reason"), pl.lit(None, pl.String).alias("detail")))
    counts = frame.group_by(by).len()["len"].to_list()
    k = _share_cap(counts, share)
    if k is None or k >= max(counts):
        return _quarantine(frame, pl.lit(False), reason, "")
    ranked = frame.with_columns(pl.struct((-pl.col("quality_weight")).alias("w"), "timestamp_ms", "trace_id").rank("ordinal").over(by).alias("_rank"))
    kept, bad = _quarantine(ranked, pl.col("_rank") > k, reason, f"{by} over its cap of {k} rows ({share:.0%} of the window)")
    return kept.drop("_rank"), bad


def curate(raw: pl.DataFrame, spec: ProgramSpec, config: QualityConfig | None = None, *, now_ms: int, trust: TrustPolicy | None = None) -> Curation:
    """Contract + quality rules: (accepted, quarantined) with ``read == accepted + quarantined``.

    ``trust``: the program's signers and labellers (``trust:`` in teleprompt.yaml); the quality rules
    then run on what the signatures vouch for, so "first submitter" is the earliest signed start.
    """
    config = config or QualityConfig()
    checked = validation.check(raw, spec, now_ms, trust=trust, score_ranges=config.score_ranges, max_payload_chars=config.max_payload_chars)
    accepted, contract_bad = checked.accepted, checked.quarantined
    rejected = [contract_bad]
    table, names = _scores(accepted["feedback"], config)
    frame = accepted.join(table, on="feedback", how="left", maintain_order="left")
    outcomes = list(dict.fromkeys([*spec.config.outcomes, *names]))
    for name in outcomes:
        if f"_m:{name}" not in frame.columns:
            frame = frame.with_columns(pl.lit(None, pl.Float64).alias(f"_m:{name}"))
    for name in config.required_metrics:
        col = f"_m:{name}" if f"_m:{name}" in frame.columns else None
        mask = pl.lit(True) if col is None else pl.col(col).is_null()
        frame, bad = _quarantine(frame, mask, "missing_score", f"no valid {name!r} score")
        rejected.append(bad)
    frame = frame.with_columns([_normalized(n, config).alias(f"_n:{n}") for n in outcomes])
    for name, minimum in config.thresholds.items():
        if f"_n:{name}" in frame.columns:
            frame, bad = _quarantine(frame, pl.col(f"_n:{name}") < minimum, "below_threshold",
                                     pl.format(f"{name} normalized to {{}} < {minimum}", pl.col(f"_n:{name}").round(4)))
            rejected.append(bad)
    if config.outlier_z is not None and frame.height >= config.outlier_min_rows:
        for name in outcomes:
            col = pl.col(f"_m:{name}")
            values = frame[f"_m:{name}"].drop_nulls()
            if values.n_unique() <= 2:  # booleans and two-valued scores have no outliers
                continue
            med = values.median()
            mad = (values - med).abs().median() * 1.4826
            if not mad:
                continue
            frame, bad = _quarantine(frame, ((col - med).abs() / mad) > config.outlier_z, "outlier_score",
                                     pl.format(f"{name}={{}} is more than {config.outlier_z:g} robust SDs from the median {med:g}", col))
            rejected.append(bad)
    size = pl.col("inputs").str.len_chars() + pl.col("outputs").str.len_chars()
    if config.payload_outlier_factor is not None and frame.height >= config.outlier_min_rows:
        limit = max(config.payload_outlier_floor, config.payload_outlier_factor * (frame.select(size.median()).item() or 0))
        frame, bad = _quarantine(frame, size > limit, "outlier_payload", pl.format(f"payload of {{}} chars > {limit:,.0f}", size))
        rejected.append(bad)
    weights = {n: config.metric_weights.get(n, 1.0) for n in outcomes}
    present = [pl.when(pl.col(f"_n:{n}").is_not_null()).then(w).otherwise(0.0) for n, w in weights.items()]
    weighted = [pl.col(f"_n:{n}").fill_null(0.0) * w for n, w in weights.items()]
    total = pl.sum_horizontal(present) if present else pl.lit(0.0)
    weight = pl.when(total > 0).then(pl.sum_horizontal(weighted) / total).otherwise(config.default_weight) if present else pl.lit(config.default_weight)
    label_field = spec.config.metric.field or (spec.output_fields[0] if spec.output_fields else "")
    frame = frame.with_columns(
        weight.cast(pl.Float64).alias("quality_weight"),
        pl.struct([pl.col(f"_n:{n}").alias(n) for n in outcomes]).struct.json_encode().alias("scores") if outcomes else pl.lit("{}").alias("scores"),
        pl.col("expectations").str.json_path_match(f"$['{label_field}']").alias("label"),
        _text_key(spec, config).alias("dedupe_key"),
    ).sort("timestamp_ms", "trace_id")
    scope = ["contributor"] if config.dedupe_scope == "per_contributor" else []
    if config.dedupe_exact:
        first = pl.struct("trace_id", "contributor").first().over([*scope, "inputs", "outputs"])
        frame, bad = _quarantine(frame, ~pl.struct("inputs", "outputs").is_first_distinct().over(scope) if scope else ~pl.struct("inputs", "outputs").is_first_distinct(),
                                 "duplicate_exact", pl.format("same inputs and outputs as {} (by {})", first.struct.field("trace_id"), first.struct.field("contributor")))
        rejected.append(bad)
    if config.dedupe_near:
        first = pl.struct("trace_id", "contributor").first().over([*scope, "dedupe_key"])
        dup = ~pl.col("dedupe_key").is_first_distinct().over(scope) if scope else ~pl.col("dedupe_key").is_first_distinct()
        frame, bad = _quarantine(frame, dup, "near_duplicate", pl.format("same normalized input text as {} (by {})", first.struct.field("trace_id"), first.struct.field("contributor")))
        rejected.append(bad)
    frame, bad = _cap(frame, "contributor", config.max_contributor_share, "contributor_cap")
    rejected.append(bad)
    frame, bad = _cap(frame.with_columns(pl.col("label").fill_null("")), "label", config.max_class_share, "class_cap")
    rejected.append(bad)
    accepted = frame.select(list(ACCEPTED_SCHEMA))
    quarantined = pl.concat(rejected, how="vertical").sort("timestamp_ms", "trace_id", nulls_last=True)
    reasons = dict(quarantined.group_by("reason").len().sort("reason").iter_rows()) if quarantined.height else {}
    return Curation(accepted, quarantined, reasons, checked.identity)


# --- sampling the training set (pure functions of the table and their parameters) -----------------

def sample_stratified(table: pl.DataFrame, size: int, by: str = "label", seed: int = 0) -> pl.DataFrame:
    """``size`` rows with every class of ``by`` equally represented where the data allows (round-robin)."""
    if table.height <= size:
        return table
    shuffled = table.with_columns(pl.col("trace_id").hash(seed).alias("_h")).sort("_h")
    ranked = shuffled.with_columns(pl.col("_h").rank("ordinal").over(by).alias("_r"))
    return ranked.sort("_r", "_h").head(size).drop("_h", "_r")


def sample_top_outcome(table: pl.DataFrame, size: int, by: str = "quality_weight") -> pl.DataFrame:
    """The ``size`` rows with the best outcome (ties: most recent first)."""
    return table.sort([by, "timestamp_ms", "trace_id"], descending=[True, True, False], nulls_last=True).head(size)


def sample_recency(table: pl.DataFrame, size: int, now_ms: int, half_life_days: float = 3.0, seed: int = 0) -> pl.DataFrame:
    """``size`` rows drawn without replacement with weight 2^(-age / half_life) (Efraimidis-Spirakis keys)."""
    if table.height <= size:
        return table
    age_days = (pl.lit(now_ms) - pl.col("timestamp_ms")).clip(lower_bound=0) / 86_400_000
    weight = (2.0 ** (-age_days / half_life_days)).clip(lower_bound=1e-12)
    uniform = (pl.col("trace_id").hash(seed) % 1_000_000_007 + 1) / 1_000_000_008
    key = uniform.log() / weight
    return table.with_columns(key.alias("_k")).sort("_k", descending=True).head(size).drop("_k")


def sample(table: pl.DataFrame, config: SamplingConfig, now_ms: int) -> pl.DataFrame:
    if config.size is None or config.strategy == "all":
        return table
    if config.strategy == "stratified":
        return sample_stratified(table, config.size, seed=config.seed)
    if config.strategy == "top_outcome":
        return sample_top_outcome(table, config.size)
    return sample_recency(table, config.size, now_ms, config.half_life_days, config.seed)


def reason_codes() -> Mapping[str, str]:
    """Every quarantine reason code with its meaning (contract first, then quality)."""
    return {**validation.REASONS, **QUALITY_REASONS}


__all__ = ["ACCEPTED_SCHEMA", "Curation", "QualityConfig", "SamplingConfig", "curate", "reason_codes", "sample",
           "sample_recency", "sample_stratified", "sample_top_outcome"]


@dataclass(frozen=True)
class CuratedDay:
    """One day of one program curated: what was read, accepted and quarantined (read must equal the
    other two: the ``counts_reconcile`` check)."""

    raw: pl.DataFrame
    accepted: pl.DataFrame
    quarantined: pl.DataFrame
    identity: dict[str, int] = field(default_factory=dict)
    trust: str = field(default_factory=lambda: validation.identity_statement(None))

    @property
    def rate(self) -> float:
        return self.quarantined.height / self.raw.height if self.raw.height else 0.0

    @property
    def reconciles(self) -> bool:
        return self.accepted.height + self.quarantined.height == self.raw.height

    @property
    def counts(self) -> dict[str, int]:
        return {"read": self.raw.height, "accepted": self.accepted.height, "quarantined": self.quarantined.height}

    @property
    def reasons(self) -> dict[str, int]:
        q = self.quarantined
        return dict(q.group_by("reason").len().sort("reason").iter_rows()) if q.height else {}


def curate_day(raw: pl.DataFrame, spec: ProgramSpec, config: QualityConfig, *, now_ms: int, trust: TrustPolicy | None = None) -> CuratedDay:
    """One day curated, with what its identity rests on (``trust``: one line) and its identity counts."""
    result = curate(raw, spec, config, now_ms=now_ms, trust=trust)
    return CuratedDay(raw, result.accepted, result.quarantined, result.identity, validation.identity_statement(trust))
