import json

import polars as pl
from hypothesis import given
from hypothesis import strategies as st

from teleprompt_assets.core.config import SamplingConfig, SplitConfig
from teleprompt_assets.core.spec import ProgramSpec, load_project
from teleprompt_assets.curate.validation import CURATED_SCHEMA
from teleprompt_assets.training.datasets import SPLITS, assign_splits, examples, label_quotas, sample_train, split_at, split_sizes, training_table

SPEC = load_project("teleprompt.yaml")[1]["ticket_router"]


def _row(i: int, message: str, label: str = "billing") -> dict:
    return {"trace_id": f"t{i}", "timestamp_ms": i, "state": "OK", "experiment_id": "1", "program": "ticket_router",
            "contributor": "0x" + "a" * 40, "inputs": json.dumps({"message": message}), "outputs": '{"queue": "billing"}',
            "feedback": "{}", "expectations": json.dumps({"queue": label}), "trace_hash": f"0x{i:064x}"}


@given(st.integers(1, 99), st.integers(0, 98), st.integers(1, 300))
def test_each_label_splits_oldest_to_train_in_its_proportions(train, dev, size):
    if train + dev > 99:
        return
    split = SplitConfig(train=train, dev=dev, holdout=100 - train - dev)
    order = [SPLITS.index(split_at(rank, size, split)) for rank in range(size)]
    assert order == sorted(order)  # older inputs never go to a later split than newer ones
    counts = [order.count(i) for i in range(3)]
    assert counts == list(split_sizes(size, split)) and sum(counts) == size
    assert counts[0] >= 1  # a label seen once is taught, not withheld
    if counts[0] > 1:  # unless one row had to be moved to train, dev and holdout get their share to the nearest row
        assert abs(counts[2] * 100 - split.holdout * size) <= 50 and abs(counts[1] * 100 - split.dev * size) <= 50


@given(st.dictionaries(st.sampled_from("abcdefgh"), st.integers(1, 40), min_size=1), st.integers(1, 98), st.integers(1, 98))
def test_across_labels_holdout_and_dev_get_their_share_of_all_rows_to_the_nearest_row(sizes, holdout, dev):
    """Rounded per label, five labels can lose two held-out rows between them: enough to fall below
    min_holdout. Apportioned over the labels, the total is the nearest row."""
    if holdout + dev > 99:
        return
    split = SplitConfig(train=100 - holdout - dev, dev=dev, holdout=holdout)
    quotas = label_quotas(sizes, split)
    total = sum(sizes.values())
    assert all(sum(q) == sizes[label] and q[0] >= 1 and min(q) >= 0 for label, q in quotas.items())
    room = sum(n - 1 for n in sizes.values())  # what can leave train at all
    held = sum(q[2] for q in quotas.values())
    assert held == min((2 * holdout * total + 100) // 200, room)


def test_a_question_that_keeps_coming_back_is_taught_and_never_held_out():
    """A hash of the input put a frequent fixed-text question in one split for good: a quarter of the
    sample traffic's questions were never taught. Copies still never straddle two splits."""
    fixed = ["I cannot log in, it says my password is wrong.", "Is there a nonprofit or education discount?"]
    rows = [_row(day * 1000 + i, f"order {day}-{i} is late", "shipping") for day in range(7) for i in range(6)]
    rows += [_row(day * 1000 + 500 + j, text, "account" if j == 0 else "sales") for day in range(7) for j, text in enumerate(fixed)]
    frame = pl.DataFrame(rows, schema=CURATED_SCHEMA).with_columns(pl.col("expectations").str.json_path_match("$.queue").alias("label"))
    table = training_table(frame, SPEC)
    assert table.height == 42 + 2
    assert table.filter(pl.col("input_key").is_in([" ".join(f.lower().split()) for f in fixed]))["split"].to_list() == ["train", "train"]
    shipping = table.filter(pl.col("label") == "shipping")
    held = shipping.filter(pl.col("split") == "holdout")
    assert held.height and held["timestamp_ms"].min() > shipping.filter(pl.col("split") == "train")["timestamp_ms"].max()


def test_duplicates_collapse_to_the_earliest_and_conflicts_to_the_majority_label():
    rows = [_row(i, f"message number {i}") for i in range(40)] + [_row(100, "Message  number 3"), _row(101, "message number 3", "sales")]
    rows += [_row(102, "message number 5", "sales"), _row(103, "message number 5", "sales")]
    table = training_table(pl.DataFrame(rows, schema=CURATED_SCHEMA), SPEC)
    assert table.height == 40
    by_key = {r["input_key"]: r for r in table.iter_rows(named=True)}
    assert by_key["message number 3"]["trace_id"] == "t3"  # billing: 2 votes against 1
    assert by_key["message number 5"]["trace_id"] == "t102"  # sales: 2 votes against 1
    window_grows = training_table(pl.DataFrame(rows + [_row(200 + i, f"something new {i}") for i in range(10)], schema=CURATED_SCHEMA), SPEC)
    before = dict(zip(table["trace_id"], table["split"]))
    moved = [(SPLITS.index(before[t]), SPLITS.index(s)) for t, s in zip(window_grows["trace_id"], window_grows["split"]) if t in before]
    assert all(new <= old for old, new in moved) and any(new < old for old, new in moved)  # newer traffic only moves older rows toward training


def test_a_near_copy_on_a_later_day_collapses_to_the_first_submitter():
    """Curation dedupes near copies within a day; the window must do it across its days (issue 17)."""
    from teleprompt_assets.core.config import QualityConfig
    from teleprompt_assets.curate.quality import curate
    from teleprompt_assets.samples.ticket_traffic import contributor_address

    first, copier = contributor_address("first"), contributor_address("copier")
    day_one = [_row(i, f"Where is parcel {i}? It is late.") | {"contributor": first} for i in range(30)]
    day_two = [_row(1000 + i, f"WHERE IS PARCEL {i} it is late!!") | {"contributor": copier, "timestamp_ms": 86_400_000 + i} for i in range(10)]
    config = QualityConfig(max_contributor_share=None)
    results = [curate(pl.DataFrame(day, schema=CURATED_SCHEMA), SPEC, config, now_ms=2 * 86_400_000) for day in (day_one, day_two)]
    assert [r.reasons for r in results] == [{}, {}]
    curated = [r.accepted for r in results]
    window = pl.concat(curated, how="vertical_relaxed")
    assert window.height == 40  # each day on its own had nothing to dedupe
    table = training_table(window, SPEC)
    assert table.height == 30 and set(table["contributor"]) == {first}
    assert training_table(window, SPEC, near=False).height == 40  # quality.dedupe_near: false keeps them


def test_a_likely_mislabeled_row_is_neither_taught_nor_tested_on():
    table = training_table(pl.DataFrame([_row(i, f"text {i}") for i in range(60)], schema=CURATED_SCHEMA), SPEC)
    flagged = table.with_columns(pl.when(pl.col("trace_id").is_in(["t1", "t2", "t3", "t4"])).then(pl.lit("likely_mislabeled")).otherwise(None).alias("label_issue"))
    for split in ("train", "dev", "holdout"):
        assert not {ex.trace_id for ex in examples(flagged, SPEC, split)} & {"t1", "t2", "t3", "t4"}
    assert sum(len(examples(flagged, SPEC, s)) for s in ("train", "dev", "holdout")) == 56


def test_examples_carry_ground_truth_and_provenance():
    table = training_table(pl.DataFrame([_row(i, f"text {i}") for i in range(30)], schema=CURATED_SCHEMA), SPEC)
    train = examples(table, SPEC, "train")
    assert train and all(ex.queue == "billing" and ex.trace_id and ex.trace_hash and ex.contributor for ex in train)
    assert set(train[0].inputs().keys()) == {"message"}


def _weighted_table(n: int = 120) -> pl.DataFrame:
    labels = ["billing", "technical", "account"]
    rows = [_row(i * 3_600_000, f"distinct message {i}", labels[i % 3 if i % 5 else 0]) for i in range(n)]
    frame = pl.DataFrame(rows, schema=CURATED_SCHEMA).with_columns(
        (pl.col("timestamp_ms") % 7 / 7).alias("quality_weight"), pl.col("expectations").str.json_path_match("$.queue").alias("label"))
    return training_table(frame, SPEC)


def test_sampling_draws_only_the_train_split_and_is_repeatable():
    table = _weighted_table()
    others = table.filter(pl.col("split") != "train")
    train = table.filter(pl.col("split") == "train")
    now = int(table["timestamp_ms"].max()) + 1
    assert sample_train(table, SamplingConfig(strategy="all", size=5), now).equals(table)
    for strategy in ("stratified", "top_outcome", "recency"):
        config = SamplingConfig(strategy=strategy, size=12)
        drawn = sample_train(table, config, now)
        assert drawn.equals(sample_train(table, config, now)), strategy
        assert drawn.filter(pl.col("split") != "train").sort("trace_id").equals(others.sort("trace_id")), strategy
        picked = drawn.filter(pl.col("split") == "train")
        assert picked.height == 12 and picked["trace_id"].is_in(train["trace_id"].to_list()).all(), strategy
    top = sample_train(table, SamplingConfig(strategy="top_outcome", size=12), now).filter(pl.col("split") == "train")
    assert top["quality_weight"].min() >= train["quality_weight"].sort(descending=True)[11]
    strat = sample_train(table, SamplingConfig(strategy="stratified", size=12), now).filter(pl.col("split") == "train")
    assert strat["label"].value_counts()["count"].to_list() == [4, 4, 4]
    recent = sample_train(table, SamplingConfig(strategy="recency", size=12, half_life_days=0.5), now).filter(pl.col("split") == "train")
    assert recent["timestamp_ms"].median() > train["timestamp_ms"].median()


def test_holdout_and_dev_are_capped_by_a_fixed_hash_sample():
    spec = ProgramSpec(SPEC.name, SPEC.config.model_copy(update={"split": SplitConfig(train=20, dev=20, holdout=60, max_holdout=30, max_dev=5)}))
    table = training_table(pl.DataFrame([_row(i, f"text number {i}") for i in range(200)], schema=CURATED_SCHEMA), spec)
    holdout = table.filter(pl.col("split") == "holdout")
    assert holdout.height > 30
    picked = examples(table, spec, "holdout")
    assert len(picked) == 30 and [ex.trace_id for ex in picked] == [ex.trace_id for ex in examples(table, spec, "holdout")]
    assert {ex.trace_hash for ex in picked} == set(holdout.sort("trace_hash")["trace_hash"].head(30))
    assert [ex.trace_id for ex in picked] == holdout.filter(pl.col("trace_hash").is_in([ex.trace_hash for ex in picked]))["trace_id"].to_list()
    assert len(examples(table, spec, "dev")) == 5
    assert len(examples(table, spec, "train")) == table.filter(pl.col("split") == "train").height


def test_the_shares_are_of_the_rows_the_label_check_leaves_usable():
    """A flagged row is used by no split: counted in the shares it would shrink the holdout below
    what the configuration asks (a 20-example minimum missed by two flagged rows)."""
    rows = [_row(i, f"distinct message {i}") for i in range(20)]
    table = training_table(pl.DataFrame(rows, schema=CURATED_SCHEMA), SPEC)
    flagged = table.with_columns(pl.when(pl.col("trace_id").is_in(["t15", "t17", "t19"])).then(pl.lit("likely_mislabeled")).otherwise(None).alias("label_issue"))
    resplit = assign_splits(flagged, SPEC.config.split)
    usable = resplit.filter(pl.col("label_issue").is_null())
    assert dict(usable.group_by("split").len().iter_rows()) == dict(zip(SPLITS, split_sizes(17, SPEC.config.split), strict=True))
    assert resplit.filter(pl.col("trace_id") == "t19")["split"].item() == "holdout"


def test_what_forward_computes_and_returns_reaches_the_demos_of_the_step_that_reads_it():
    """A retrieval program's predictor reads ``context``, which forward computes: no program input.
    Logged in the outputs (forward returns it), the examples carry it; without it they cannot teach."""
    from teleprompt_assets.core.config import ProgramConfig

    spec = ProgramSpec("policies", ProgramConfig(module="teleprompt_assets_tests.user_programs.support_desk:AnswerFromPolicies",
                                                metric={"kind": "exact_match", "field": "answer"}))
    assert spec.input_fields == ("question",) and spec.output_fields == ("answer",) and spec.computed_fields == ("context",)
    rows = [_row(i, "") | {"inputs": json.dumps({"question": f"when is my refund {i} paid"}),
                           "outputs": json.dumps({"answer": "in five days", "context": "Refunds are paid back within five days."} if i % 2 else {"answer": "x"}),
                           "expectations": json.dumps({"answer": "in five days"})} for i in range(30)]
    table = training_table(pl.DataFrame(rows, schema=CURATED_SCHEMA), spec)
    built = [ex for split in SPLITS for ex in examples(table, spec, split)]
    assert {ex.get("context") for ex in built} == {"Refunds are paid back within five days.", None}
    assert all(ex.answer == "in five days" for ex in built)  # the label is still the ground truth, never the logged answer
