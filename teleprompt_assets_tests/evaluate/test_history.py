from teleprompt_assets.evaluate.history import Day, html_page, markdown, verdict

DAYS = [Day("2026-11-18", 0.40, 0.55, 375_000, True, 30, lm_calls=60), Day("2026-11-19", 0.55, 0.54, -18_181, False, 31, lm_calls=62, answers_reused=31)]


def test_the_verdict_says_at_a_glance_whether_the_day_reached_deltaone():
    assert verdict("ticket_router", DAYS[0]) == "**ticket_router** 2026-11-18: ✅ DeltaOne: 0.400 → 0.550 (+37.5%) on 30 held-out examples"
    assert "❌ no DeltaOne" in verdict("ticket_router", DAYS[1]) and "(-1.8%)" in verdict("ticket_router", DAYS[1])


def test_markdown_leads_with_the_latest_day_and_lists_the_rest_newest_first():
    text = markdown("ticket_router", DAYS)
    assert text.splitlines()[0].startswith("**ticket_router** 2026-11-19: ❌")
    rows = [line for line in text.splitlines() if line.startswith("| 2026")]
    assert [r.split(" | ")[0] for r in rows] == ["| 2026-11-19", "| 2026-11-18"]
    assert markdown("x", []) == "**x**: no evaluation yet"


def test_the_html_page_is_self_contained_and_marks_deltaone_days():
    page = html_page("ticket<router>", DAYS)
    assert page.startswith("<!doctype html>") and "<script" not in page and "ticket&lt;router&gt;" in page
    assert page.count("<polyline") == 2 and page.count("DeltaOne</title>") == 1
    assert "<td>2026-11-19</td>" in page and html_page("solo", DAYS[:1]).count("<polyline") == 2
