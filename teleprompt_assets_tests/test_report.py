from teleprompt_assets.evaluate import ExampleScore, compare
from teleprompt_assets.report import markdown, segments

ONE = 1_000_000


def _scores():
    pairs = [(0, ONE, "billing"), (ONE, ONE, "billing"), (ONE, 0, "sales"), (0, 0, "sales"), (0, ONE, "shipping")]
    scores = [ExampleScore(f"0x{i:064x}", f"tr-{i}", "0x0", b, c, "billing", label) for i, (b, c, label) in enumerate(pairs)]
    return scores, [p[2] for p in pairs]


def test_segments_by_label_count_wins_losses_ties():
    scores, labels = _scores()
    by_label = {s.label: s for s in segments(scores, labels)}
    assert (by_label["billing"].wins, by_label["billing"].losses, by_label["billing"].ties) == (1, 0, 1)
    assert (by_label["sales"].wins, by_label["sales"].losses, by_label["sales"].ties) == (0, 1, 1)
    assert by_label["shipping"].candidate_sum == ONE


def test_markdown_lists_segments_and_flipped_examples():
    scores, labels = _scores()
    text = markdown(compare(scores, resamples=50), scores, labels, [f"message | {i}" for i in range(5)])
    assert "| sales | 2 | 0.500 | 0.000 | 0 | 1 | 1 |" in text
    assert "Examples that flipped (3" in text
    assert "tr-2 (loss)" in text and "tr-0 (win)" in text
    assert "message \\| 2" in text
