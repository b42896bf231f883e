"""Registry behaviour against a real sqlite MLflow store."""

import json

import dspy
import mlflow
import pytest

from teleprompt_assets.core.lm import offline_lm
from teleprompt_assets.core.settings import load_settings
from teleprompt_assets.core.spec import load_project
from teleprompt_assets.core.tracking import connect, experiment_id
from teleprompt_assets.optimize.teleprompters import load_state, program_state
from teleprompt_assets.register import registry, rollback


@pytest.fixture
def reg(tp_home):
    settings = load_settings()
    client = connect(settings)
    spec = load_project(settings.config_path)[1]["ticket_router"]
    return client, spec, experiment_id(client, settings, "teleprompt-pipeline")


def _register(reg, demo_queue: str, window: str = "2026-01-01..2026-01-07", base: int = 0):
    client, spec, exp = reg
    program = spec.build()
    program.route.demos = [dspy.Example(message="my parcel never arrived", queue=demo_queue)]
    state = program_state(program)
    sample = {registry.SAMPLE_ARTIFACT: json.dumps({"message": "my parcel never arrived"})}
    return registry.register(client, spec, load_state(spec, state), state, window, exp, {"base_version": base}, sample)


def test_same_program_and_window_registers_once(reg):
    client, spec, _ = reg
    first = _register(reg, "shipping")
    again = _register(reg, "shipping")
    assert first.created and not again.created and again.version == first.version
    assert _register(reg, "shipping", window="2026-01-02..2026-01-08").version == first.version + 1
    assert len(client.search_model_versions(f"name = '{spec.registered_model_name}'")) == 2


def test_promotion_and_refusal_on_regression_tie_and_thin_evidence(reg):
    client, spec, _ = reg
    name = spec.registered_model_name
    v1 = _register(reg, "shipping")
    assert not registry.promote_if_better(client, name, v1.version, 0, 10, 10, 25, min_holdout=20)[0]  # a tie
    assert not registry.promote_if_better(client, name, v1.version, 0, 10, 11, 19, min_holdout=20)[0]  # too few examples
    assert registry.champion(client, name) is None
    assert registry.promote_if_better(client, name, v1.version, 0, 10, 11, 20, min_holdout=20)[0]
    v2 = _register(reg, "billing", window="2026-01-02..2026-01-08")
    promoted, reason = registry.promote_if_better(client, name, v2.version, v1.version, 10, 9, 25, min_holdout=20)
    assert not promoted and "C=9 < B=10" in reason
    assert int(registry.champion(client, name).version) == v1.version
    assert client.get_model_version(name, str(v2.version)).tags["promotion_refused"] == reason


def test_after_a_rollback_only_a_candidate_measured_against_the_restored_version_is_promoted(reg):
    """Policy (registry docs, promotion.py): a rollback makes the restored version the baseline."""
    client, spec, _ = reg
    name = spec.registered_model_name
    v1 = _register(reg, "shipping", window="2026-01-01..2026-01-07")
    v2 = _register(reg, "billing", window="2026-01-02..2026-01-08")
    registry.promote(client, name, v1.version, "first")
    registry.promote(client, name, v2.version, "better")
    rollback.rollback(client, spec, offline_lm())
    v3 = _register(reg, "account", window="2026-01-03..2026-01-09")
    promoted, reason = registry.promote_if_better(client, name, v3.version, v2.version, 10, 20, 30, min_holdout=20)
    assert not promoted and "measured against v2, but v1 serves now" in reason
    assert registry.promote_if_better(client, name, v3.version, v1.version, 10, 20, 30, min_holdout=20)[0]
    assert int(registry.champion(client, name).version) == v3.version


def test_rollback_restores_validates_and_records(reg):
    client, spec, _ = reg
    name = spec.registered_model_name
    v1, v2 = _register(reg, "shipping"), _register(reg, "billing", window="w2")
    registry.promote(client, name, v1.version, "first")
    registry.promote(client, name, v2.version, "better")
    done = rollback.rollback(client, spec, offline_lm())
    assert (done.from_version, done.to_version) == (v2.version, v1.version)
    assert int(registry.champion(client, name).version) == v1.version
    assert client.get_model_version(name, str(v2.version)).tags["rollback_reason"] == "manual rollback"
    assert client.get_model_version(name, str(v1.version)).tags["restored_from"] == str(v2.version)
    # a re-run of the rolled-back version's partition does not put it back
    assert not registry.promote_if_better(client, name, v2.version, v1.version, 1, 2, 30, min_holdout=20)[0]
    with pytest.raises(rollback.RollbackError, match="no version 99"):
        rollback.rollback(client, spec, offline_lm(), to_version=99)
    with pytest.raises(rollback.RollbackError, match="already the champion"):
        rollback.rollback(client, spec, offline_lm(), to_version=v1.version)


def test_a_rollback_cut_short_at_the_alias_move_is_on_record_and_completes_when_repeated(reg, monkeypatch):
    client, spec, _ = reg
    name = spec.registered_model_name
    v1, v2 = _register(reg, "shipping"), _register(reg, "billing", window="w2")
    registry.promote(client, name, v1.version, "first")
    registry.promote(client, name, v2.version, "better")

    def crash(*args, **kwargs):
        raise ConnectionError("tracking server went away")

    monkeypatch.setattr(client, "set_registered_model_alias", crash)
    with pytest.raises(ConnectionError):
        rollback.rollback(client, spec, offline_lm())
    monkeypatch.undo()
    assert int(registry.champion(client, name).version) == v2.version  # still serving, and the rollback is on record
    assert client.get_model_version(name, str(v2.version)).tags["rollback_reason"] == "manual rollback"
    assert not registry.promote_if_better(client, name, v2.version, v1.version, 1, 2, 30, min_holdout=20)[0]
    done = rollback.rollback(client, spec, offline_lm(), to_version=v1.version)
    assert (done.from_version, done.to_version) == (v2.version, v1.version)
    assert int(registry.champion(client, name).version) == v1.version


def test_champion_loads_with_the_mlflow_dspy_flavor(reg):
    client, spec, exp = reg
    v1 = _register(reg, "shipping")
    registry.promote(client, spec.registered_model_name, v1.version, "first")
    model = mlflow.dspy.load_model(f"models:/{spec.registered_model_name}@{registry.CHAMPION}")
    with dspy.context(lm=offline_lm()):
        assert model(message="my parcel never arrived at all").queue == "shipping"
    assert registry.load_champion(client, spec)[0].route.demos[0]["queue"] == "shipping"

    # a KNNFewShot program (its candidate pool lives in its state) survives registration both ways
    from teleprompt_assets.optimize.knn import KNNProgram
    from teleprompt_assets.optimize.teleprompters import compile_program
    from teleprompt_assets_tests.optimize.test_knn import _spec, _tickets

    knn_spec = _spec("KNNFewShot", k=3)
    tickets = _tickets(70, 1)
    compiled = compile_program(knn_spec, tickets[:60], knn_spec.metric())
    v2 = registry.register(client, knn_spec, load_state(knn_spec, compiled.state), compiled.state, "2026-01-02..2026-01-08", exp, {"base_version": v1.version})
    registry.promote(client, spec.registered_model_name, v2.version, "knn")
    served = mlflow.dspy.load_model(v2.uri)
    champion = registry.load_champion(client, knn_spec)[0]
    assert isinstance(served, KNNProgram) and program_state(champion) == compiled.state
    with dspy.context(lm=offline_lm()):
        answers = {tuple(p(message=ex.message).queue for ex in tickets[60:]) for p in (compiled.program, served, champion)}
    assert len(answers) == 1 and sum(a == ex.queue for a, ex in zip(answers.pop(), tickets[60:])) >= 8


def test_completing_a_promotion_fails_on_a_registry_error_but_not_on_a_missing_version(reg, monkeypatch):
    """A re-run completes a promotion a crash left half-recorded (alias moved, old champion not yet
    marked demoted). A registry that does not answer must fail it, not be taken for "no such version"."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, RESOURCE_DOES_NOT_EXIST

    client, spec, _ = reg
    name = spec.registered_model_name
    v1, v2 = _register(reg, "shipping"), _register(reg, "billing", window="w2")
    registry.promote(client, name, v1.version, "first")
    real_tag = client.set_model_version_tag

    def crash_before_demoting(model, version, key, value):
        if key == "demoted_at":
            raise KeyboardInterrupt("killed")
        return real_tag(model, version, key, value)

    monkeypatch.setattr(client, "set_model_version_tag", crash_before_demoting)
    with pytest.raises(KeyboardInterrupt):
        registry.promote(client, name, v2.version, "second")
    monkeypatch.setattr(client, "set_model_version_tag", real_tag)
    assert "demoted_at" not in client.get_model_version(name, str(v1.version)).tags

    real_get = client.get_model_version
    monkeypatch.setattr(client, "get_model_version", lambda *a: (_ for _ in ()).throw(MlflowException("server error", error_code=INTERNAL_ERROR)))
    with pytest.raises(MlflowException, match="server error"):
        registry.promote(client, name, v2.version, "second")
    monkeypatch.setattr(client, "get_model_version", lambda *a: (_ for _ in ()).throw(MlflowException("gone", error_code=RESOURCE_DOES_NOT_EXIST)))
    registry.promote(client, name, v2.version, "second")  # the old champion was deleted: nothing to mark
    monkeypatch.setattr(client, "get_model_version", real_get)
    registry.promote(client, name, v2.version, "second")
    assert client.get_model_version(name, str(v1.version)).tags["demoted_at"]


def _tags(client, name: str, version: int) -> dict[str, str]:
    return client.get_model_version(name, str(version)).tags


def test_rollback_goes_only_to_a_version_that_served_unless_forced(reg):
    """Issue 20 item 5: ``--to 4`` once made champion a version that had failed no_regression and
    never served."""
    client, spec, _ = reg
    name = spec.registered_model_name
    never = _register(reg, "account", window="w0")
    client.set_model_version_tag(name, str(never.version), "promotion_refused", "not promoted: C=9 < B=10 on 25 holdout examples")
    v2, v3 = _register(reg, "shipping", window="w1"), _register(reg, "billing", window="w2")
    registry.promote(client, name, v2.version, "first")
    registry.promote(client, name, v3.version, "better")
    with pytest.raises(rollback.RollbackRefused, match=rf"v{never.version} never served \(not promoted: C=9 < B=10.*\); pass --force"):
        rollback.rollback(client, spec, offline_lm(), to_version=never.version)
    assert int(registry.champion(client, name).version) == v3.version
    assert "rolled_back_at" not in _tags(client, name, v3.version) and "restored_at" not in _tags(client, name, never.version)

    done = rollback.rollback(client, spec, offline_lm(), to_version=never.version, force=True)
    assert (done.from_version, done.to_version) == (v3.version, never.version)
    assert len(done.warnings) == 1 and f"v{never.version} never served" in done.warnings[0]
    assert _tags(client, name, never.version)["forced"] == done.warnings[0]
    assert int(registry.champion(client, name).version) == never.version

    # once restored it has served: going back to it later needs no force
    registry.promote(client, name, v2.version, "again")
    done = rollback.rollback(client, spec, offline_lm(), to_version=never.version)
    assert done.to_version == never.version and done.warnings == ()
    assert int(registry.champion(client, name).version) == never.version


def test_rollback_never_moves_the_champion_forward_unless_forced(reg):
    """Issue 20 item 5: ``--to 6`` once moved the champion past the current one."""
    client, spec, _ = reg
    name = spec.registered_model_name
    v1, v2 = _register(reg, "shipping"), _register(reg, "billing", window="w2")
    registry.promote(client, name, v1.version, "first")
    registry.promote(client, name, v2.version, "better")
    rollback.rollback(client, spec, offline_lm())
    with pytest.raises(rollback.RollbackRefused, match=rf"^rollback moves back; v{v2.version} is newer than the champion v{v1.version}; pass --force"):
        rollback.rollback(client, spec, offline_lm(), to_version=v2.version)
    assert int(registry.champion(client, name).version) == v1.version
    assert "restored_from" not in _tags(client, name, v2.version)

    done = rollback.rollback(client, spec, offline_lm(), to_version=v2.version, force=True, reason="v1 misroutes refunds")
    assert done.to_version == v2.version and "newer than the champion" in done.warnings[0]
    assert _tags(client, name, v2.version)["forced"] == done.warnings[0]
    assert _tags(client, name, v1.version)["rollback_reason"] == "v1 misroutes refunds"
    assert int(registry.champion(client, name).version) == v2.version


def test_rollback_refusals_are_wrong_inputs_and_change_nothing(reg):
    client, spec, _ = reg
    name = spec.registered_model_name
    with pytest.raises(rollback.RollbackRefused, match="no champion"):
        rollback.rollback(client, spec, offline_lm())
    v1 = _register(reg, "shipping")
    registry.promote(client, name, v1.version, "first")
    for target, words in ((None, "replaced no earlier champion; pass --to"), (v1.version, "already the champion"), (99, "no version 99")):
        with pytest.raises(rollback.RollbackRefused, match=words):
            rollback.rollback(client, spec, offline_lm(), to_version=target, force=True)
    assert "rolled_back_at" not in _tags(client, name, v1.version)
    blocked = _register(reg, "billing", window="w2")  # the no_regression check stopped its run: no promotion decided
    for key, value in {"baseline_score": 10, "candidate_score": 9, "eval_count": 25}.items():
        client.set_model_version_tag(name, str(blocked.version), key, str(value))
    with pytest.raises(rollback.RollbackRefused, match=rf"v{blocked.version} is newer.*; .*v{blocked.version} never served \(failed no_regression: C=9 < B=10\)"):
        rollback.rollback(client, spec, offline_lm(), to_version=blocked.version)


def test_status_gives_the_champions_scores_as_means_and_names_the_sums(reg):
    """Issue 20 item 6: status showed ``"44340142 -> 54375760 over 70"``, sums of quantized scores."""
    from fractions import Fraction

    client, spec, _ = reg
    name = spec.registered_model_name
    assert registry.status(client, spec)["champion_scores"] is None
    v1 = _register(reg, "shipping")
    for key, value in {"baseline_score": 44340142, "candidate_score": 54375760, "eval_count": 70}.items():
        client.set_model_version_tag(name, str(v1.version), key, str(value))
    registry.promote(client, name, v1.version, "first")
    scores = registry.status(client, spec)["champion_scores"]
    assert scores == {
        "baseline_mean": float(Fraction(44340142, 70 * 10**6)), "candidate_mean": float(Fraction(54375760, 70 * 10**6)), "eval_count": 70,
        "baseline_sum_q": 44340142, "candidate_sum_q": 54375760,
    }
    assert 0 <= scores["baseline_mean"] <= 1 and round(scores["candidate_mean"], 4) == 0.7768
