import subprocess
import sys
from datetime import UTC, datetime

from teleprompt_assets.attest.evidence import attestation_time, comparison_of, evidence_of, refusal
from teleprompt_assets.evaluate.deltaone import ExampleScore, compare


def _evaluation(pairs: list[tuple[int, int]]) -> dict:
    scores = [ExampleScore(f"0x{i:064x}", f"t{i}", "0x0", b, c, "", "") for i, (b, c) in enumerate(pairs)]
    return {"baseline_version": 3, "comparison": compare(scores).to_dict(), "scores": [s.__dict__ for s in scores]}


def test_too_little_evidence_is_refused_before_anything_else():
    comparison = comparison_of(_evaluation([(0, 1_000_000)] * 19))
    assert refusal(comparison, 20) == "evidence too small: 19 held-out examples, fewer than min_holdout=20"
    assert refusal(comparison_of(_evaluation([(0, 1_000_000)] * 20)), 20) is None


def test_no_deltaone_and_no_significance_are_named():
    assert refusal(comparison_of(_evaluation([(1_000_000, 1_000_000)] * 30)), 20) == "DeltaOne not reached"
    noisy = [(0, 1_000_000)] * 3 + [(1_000_000, 0)] * 2 + [(500_000, 500_000)] * 25
    assert refusal(comparison_of(_evaluation(noisy)), 20).startswith("confidence bound not above zero")


def test_evidence_carries_the_evaluation_and_the_day():
    evaluation = _evaluation([(0, 1_000_000)] * 20)
    compiled = {"state": {"p": 1}, "data_traces": [{"trace_hash": "0x" + "11" * 32}]}
    rewards = [{"contributor": "0xA2DFbbE547B9fe2Eb36D63B62AE89F1b950f0dD8", "weight_ppm": 1_000_000}, {"contributor": "0x0", "weight_ppm": 0}]
    evidence = evidence_of("p", "2026-11-20", 4, compiled, evaluation, rewards, None)
    assert (evidence.model_version, evidence.baseline_version, len(evidence.eval_leaves), len(evidence.reward_leaves)) == (4, 3, 20, 1)
    assert evidence.time == attestation_time("2026-11-20") == int(datetime(2026, 11, 21, tzinfo=UTC).timestamp())
    assert evidence.ref_uid == "0x" + "00" * 32


def test_verifying_a_bundle_loads_neither_mlflow_nor_dspy():
    """What import-linter checks statically, seen at run time: the verifier's imports stay small."""
    code = ("import sys; import teleprompt_assets.attest.bundles, teleprompt_assets.attest.evidence; "
            "print(sorted(m for m in ('mlflow', 'dspy', 'dagster', 'polars') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr
