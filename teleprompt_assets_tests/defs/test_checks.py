import dagster as dg

from teleprompt_assets.defs.checks import Verdict, combined_check
from teleprompt_assets.defs.partitions import target_of

A, B = target_of("2026-11-02|outreach_reply"), target_of("2026-11-02|ticket_router")


def test_one_program_reports_as_itself():
    result = combined_check("no_regression", "registered_version", [Verdict(B, False, {"candidate_sum": 1}, "C < B")])
    assert (result.passed, result.description, result.severity) == (False, "C < B", dg.AssetCheckSeverity.ERROR)
    assert set(result.metadata) == {"candidate_sum"}


def test_several_programs_fold_into_one_verdict_naming_each():
    passed = combined_check("prompt_quality", "compiled_program", [Verdict(A, True, {"n": 1}), Verdict(B, True, {"n": 2})])
    assert passed.passed and passed.description is None
    assert {k: v.value for k, v in passed.metadata.items()} == {"outreach_reply.n": 1, "ticket_router.n": 2}
    failed = combined_check("prompt_quality", "compiled_program", [Verdict(A, True, {}), Verdict(B, False, {}, "demo 2 lacks queue")])
    assert not failed.passed and failed.description == "ticket_router: demo 2 lacks queue"
    assert failed.severity == dg.AssetCheckSeverity.ERROR  # blocks the whole step by default


def test_a_partial_failure_can_be_downgraded_but_a_total_one_cannot():
    some = combined_check("no_regression", "registered_version", [Verdict(A, True, {}), Verdict(B, False, {}, "C < B")], partial=dg.AssetCheckSeverity.WARN)
    assert not some.passed and some.severity == dg.AssetCheckSeverity.WARN
    every = combined_check("no_regression", "registered_version", [Verdict(A, False, {}), Verdict(B, False, {})], partial=dg.AssetCheckSeverity.WARN)
    assert every.severity == dg.AssetCheckSeverity.ERROR
    assert every.description == "outreach_reply: failed; ticket_router: failed"


def test_a_check_that_only_reports_warns_whatever_fails():
    """no_regression: a candidate below its champion is an outcome, never the run's failure."""
    one = combined_check("no_regression", "registered_version", [Verdict(B, False, {}, "C < B")], failed=dg.AssetCheckSeverity.WARN)
    every = combined_check("no_regression", "registered_version", [Verdict(A, False, {}), Verdict(B, False, {})],
                           partial=dg.AssetCheckSeverity.WARN, failed=dg.AssetCheckSeverity.WARN)
    assert (one.severity, every.severity) == (dg.AssetCheckSeverity.WARN, dg.AssetCheckSeverity.WARN)
