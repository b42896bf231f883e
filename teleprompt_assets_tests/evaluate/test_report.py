from teleprompt_assets.evaluate.deltaone import ExampleScore, compare
from teleprompt_assets.evaluate.report import by_baseline_score, choose, markdown, segments
from teleprompt_assets.training.outcome_model import categories

ONE = 1_000_000


def _scores():
    pairs = [(0, ONE, "billing"), (ONE, ONE, "billing"), (ONE, 0, "sales"), (0, 0, "sales"), (0, ONE, "shipping"), (ONE, ONE, "shipping")]
    scores = [ExampleScore(f"0x{i:064x}", f"tr-{i}", "0x0", b, c, "billing", label) for i, (b, c, label) in enumerate(pairs)]
    return scores, [p[2] for p in pairs]


def test_segments_count_wins_losses_ties():
    scores, labels = _scores()
    by_key = {s.key: s for s in segments(scores, labels)}
    assert (by_key["billing"].wins, by_key["billing"].losses, by_key["billing"].ties) == (1, 0, 1)
    assert (by_key["sales"].wins, by_key["sales"].losses, by_key["sales"].ties) == (0, 1, 1)
    assert by_key["shipping"].candidate_sum == 2 * ONE


def test_cardinality_rule_few_values_mostly_repeated():
    assert categories(["a", "b", "a", "b"]) == ("a", "b")
    assert categories(["a", "a", "a", "b"]) == ("a", "b")
    assert categories(["a", "b", "c"]) is None  # unique
    assert categories(["stock answer"] * 9 + [f"reply {i}" for i in range(3)]) is None  # mostly unique beside one stock answer
    assert categories([str(i % 13) for i in range(130)]) is None  # more than 12 values
    assert categories([str(i % 12) for i in range(24)]) is not None
    assert categories(["", None, "x", "x"]) == ("x",)  # missing values are not a category
    assert categories(["", None]) is None


def test_a_categorical_gold_label_groups_the_report():
    scores, labels = _scores()
    grouping = choose(scores, "queue", labels, "the gold label")
    assert grouping.by == "queue" and grouping.keys == tuple(labels)
    text = markdown(compare(scores, resamples=50), scores, grouping, [f"message | {i}" for i in range(6)])
    assert "| queue | n | baseline | candidate | wins | losses | ties |" in text
    assert "| sales | 2 | 0.500 | 0.000 | 0 | 1 | 1 |" in text


def test_free_text_never_becomes_a_group():
    scores, _ = _scores()
    replies = [f"Hi customer {i}, here is a long free-text reply" for i in range(6)]
    grouping = choose(scores, "reply", replies, "the gold label")
    assert grouping.by == "baseline score"
    assert "reply" in grouping.why and "6 distinct values in 6 examples" in grouping.why
    text = markdown(compare(scores, resamples=50), scores, grouping, [f"message {i}" for i in range(6)])
    assert "free-text reply" not in text
    assert "| 0.00–0.10 | 3 | 0.000 | 0.667 | 2 | 0 | 1 |" in text
    assert "| 0.90–1.00 | 3 | 1.000 | 0.667 | 0 | 1 | 2 |" in text


def test_score_bands_are_tenths_of_the_quantized_score():
    tenth = ONE // 10
    scores = [ExampleScore("0x" + "0" * 64, f"tr-{q}", "0x0", q, q, "", "") for q in (0, tenth - 1, tenth, ONE // 2, ONE - 1, ONE)]
    grouping = by_baseline_score(scores, "why")
    assert grouping.keys == ("0.00–0.10", "0.00–0.10", "0.10–0.20", "0.50–0.60", "0.90–1.00", "0.90–1.00")


def test_flipped_examples_are_keyed_by_trace_and_hash_with_a_truncated_input():
    scores, labels = _scores()
    grouping = choose(scores, "queue", labels, "the gold label")
    long_input = "word " * 40 + "| end"
    text = markdown(compare(scores, resamples=50), scores, grouping, [long_input] * 6)
    assert "Examples that flipped (3, largest change first" in text
    assert "| example | change | queue | baseline | candidate | input |" in text
    flipped = [line for line in text.splitlines() if line.startswith("| tr-")]
    assert len(flipped) == 3
    assert flipped[0].startswith("| tr-0 `0x00000000` | win |")
    assert "| loss |" in text and "| win |" in text
    assert all("…" in line and "| end" not in line for line in flipped)
    assert "| 1.000 billing |" in text  # baseline score and a truncated output
