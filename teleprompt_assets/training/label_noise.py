"""Which labels the window's own evidence contradicts (confident learning over a cross-fitted model).

Rewards pay for labels, so a contributor that labels carelessly must not earn like one that labels
well, and a wrong label must never become a demo. The evidence is every other label in the window:

1. A multinomial naive Bayes model over the input's content words (``core.lm.tokens``) predicts the
   label field. It is *cross-fitted*: the window's labeled rows are cut into five folds by a hash
   of the input, and each row is scored by the model trained on the other four, so a row never vouches for
   itself. Naive Bayes because it needs no LM call, trains in one pass over 100k rows, and is
   deterministic; it only has to be better than chance per class, not good.
2. Confident learning (Northcutt et al., 2021): a class's threshold is the mean predicted
   probability of that class over the rows labeled with it. A row labeled ``i`` is *likely
   mislabeled* when some other class ``j`` reaches its own threshold and is the most probable of
   the classes that do. Per-class thresholds keep a hard class from being flagged wholesale.

It applies to categorical labels (the metric's field, at most ``MAX_CLASSES`` values, each seen
at least twice, ``MIN_ROWS`` labeled rows or more). Free-text outputs (a reply) have no such
evidence; there, only outcome feedback speaks to quality, and nothing is flagged.

Flagged rows stay in the table with ``label_issue = "likely_mislabeled"`` and a detail: they are
reported by ``training_set``, never become demos or held-out examples, and count against their
contributor's label agreement in the reward weights (``reward/attribution.py``).
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl
from eth_utils import keccak

from teleprompt_assets.core.lm import tokens
from teleprompt_assets.core.spec import ProgramSpec

LIKELY_MISLABELED = "likely_mislabeled"
FOLDS = 5
MAX_CLASSES = 50
MIN_ROWS = 30
ISSUE_COLUMNS = {"label_issue": pl.String, "label_issue_detail": pl.String, "label_suggested": pl.String}


@dataclass(frozen=True)
class LabelCheck:
    table: pl.DataFrame  # the input with label_issue / label_issue_detail
    applied: str  # "" when applied, else why not (one line)
    flagged: int

    @property
    def summary(self) -> str:
        return f"{self.flagged} likely mislabeled (confident learning, {FOLDS}-fold naive Bayes)" if not self.applied else f"not applied: {self.applied}"


def _fold(text: str) -> int:
    """By the input's content, not the trace id: MLflow mints trace ids at random, and the same
    traffic in two stores must get the same flags."""
    return int.from_bytes(keccak(text="fold\x1f" + text)[:8], "big") % FOLDS


class _NaiveBayes:
    def __init__(self, docs: Sequence[Counter[str]], labels: Sequence[str], classes: Sequence[str]):
        self.classes = list(classes)
        self.prior = {c: math.log((labels.count(c) + 1) / (len(labels) + len(classes))) for c in classes}
        words: dict[str, Counter[str]] = defaultdict(Counter)
        for doc, label in zip(docs, labels, strict=True):
            words[label].update(doc)
        vocab = set().union(*words.values()) if words else set()
        self.size = len(vocab) + 1
        self.words = words
        self.totals = {c: sum(words[c].values()) for c in classes}

    def proba(self, doc: Counter[str]) -> dict[str, float]:
        scores = {}
        for c in self.classes:
            counts, denominator = self.words[c], self.totals[c] + self.size
            scores[c] = self.prior[c] + sum(n * math.log((counts[w] + 1) / denominator) for w, n in sorted(doc.items()))
        top = max(scores.values())
        exp = {c: math.exp(s - top) for c, s in scores.items()}
        total = sum(exp.values())
        return {c: v / total for c, v in exp.items()}


def _input_text(inputs_json: str, fields: Sequence[str]) -> str:
    values = json.loads(inputs_json)
    return " ".join(str(values.get(f, "")) for f in fields)


def categorical(labels: Sequence[str | None]) -> bool:
    """Whether a column of labels is a categorical label: 2 to ``MAX_CLASSES`` values, each seen at
    least twice (free-text outputs are not)."""
    counts = Counter(label for label in labels if label not in (None, ""))
    return 2 <= len(counts) <= MAX_CLASSES and min(counts.values()) >= 2


def check_labels(table: pl.DataFrame, spec: ProgramSpec) -> LabelCheck:
    """``table`` (a training table: ``inputs``, ``label``, ``trace_hash``) with the likely mislabeled rows marked."""
    unflagged = table.with_columns(*(pl.lit(None, t).alias(c) for c, t in ISSUE_COLUMNS.items()))
    if spec.config.metric.kind not in ("exact_match", "token_f1"):
        return LabelCheck(unflagged, f"the metric ({spec.config.metric.kind}) has no ground-truth labels to check", 0)
    if "label" not in table.columns:
        return LabelCheck(unflagged, "no label column", 0)
    labeled = table.with_row_index("_row").filter(pl.col("label").is_not_null() & (pl.col("label") != ""))
    counts = Counter(labeled["label"].to_list())
    if labeled.height < MIN_ROWS:
        return LabelCheck(unflagged, f"{labeled.height} labeled rows (needs {MIN_ROWS})", 0)
    if not categorical(labeled["label"].to_list()):
        return LabelCheck(unflagged, f"{len(counts)} label values: not a categorical label (2 to {MAX_CLASSES} values, each seen twice)", 0)
    classes = sorted(counts)
    rows = labeled.select("_row", "inputs", "label").to_dicts()
    docs = [tokens(_input_text(r["inputs"], spec.input_fields)) for r in rows]
    folds = [_fold(_input_text(r["inputs"], spec.input_fields)) for r in rows]
    proba: list[dict[str, float]] = [{}] * len(rows)
    for k in range(FOLDS):
        train = [i for i, f in enumerate(folds) if f != k]
        model = _NaiveBayes([docs[i] for i in train], [rows[i]["label"] for i in train], classes)
        for i, f in enumerate(folds):
            if f == k:
                proba[i] = model.proba(docs[i])
    threshold = {c: sum(p[c] for p, r in zip(proba, rows, strict=True) if r["label"] == c) / counts[c] for c in classes}
    issues: dict[int, str] = {}
    suggested: dict[int, str] = {}
    for r, p in zip(rows, proba, strict=True):
        confident = [c for c in classes if p[c] >= threshold[c]]
        if not confident:
            continue
        best = max(confident, key=lambda c: (p[c], c))
        if best != r["label"]:
            suggested[r["_row"]] = best
            issues[r["_row"]] = f"labeled {r['label']!r}; the window's other labels say {best!r} (p={p[best]:.2f} vs {p[r['label']]:.2f})"
    marked = table.with_columns(
        pl.Series("label_issue", [LIKELY_MISLABELED if i in issues else None for i in range(table.height)], pl.String),
        pl.Series("label_issue_detail", [issues.get(i) for i in range(table.height)], pl.String),
        pl.Series("label_suggested", [suggested.get(i) for i in range(table.height)], pl.String),
    )
    return LabelCheck(marked, "", len(issues))


def markdown(table: pl.DataFrame, limit: int = 20) -> str:
    """The flagged rows as a table for the asset's metadata (the first ``limit``; the count is beside it)."""
    if "label_issue" not in table.columns:
        return "label check not run"
    flagged = table.filter(pl.col("label_issue").is_not_null()).head(limit)
    if flagged.is_empty():
        return "none"
    lines = ["| trace_id | contributor | reason | detail |", "|---|---|---|---|"]
    lines += [f"| {r['trace_id']} | {r['contributor']} | {r['label_issue']} | {r['label_issue_detail']} |" for r in flagged.iter_rows(named=True)]
    return "\n".join(lines)


def credible(table: pl.DataFrame) -> pl.DataFrame:
    """The rows no check flagged (all of them, for a table the check never saw)."""
    return table.filter(pl.col("label_issue").is_null()) if "label_issue" in table.columns else table
