import dspy

from teleprompt_assets.core.config import LMConfig, RewardsConfig
from teleprompt_assets.core.lm import offline_lm
from teleprompt_assets.core.spec import load_project
from teleprompt_assets.optimize.knn import KNNFewShot
from teleprompt_assets.reward.impact import group_impact
from teleprompt_assets.reward.weigh import impact_budget

SPEC = load_project("teleprompt.yaml")[1]["ticket_router"]


def _example(message: str, queue: str, trace_id: str | None = None) -> dspy.Example:
    return dspy.Example(message=message, queue=queue, trace_id=trace_id).with_inputs("message")


def _program() -> dspy.Module:
    program = SPEC.build()
    program.route.demos = [_example("parcel lost in transit", "shipping", "t1"), _example("weather is nice today", "sales", "t2")]
    return program


def test_a_group_is_credited_what_the_program_loses_without_it_on_its_own_label():
    holdout = [_example("my parcel was lost in transit", "shipping"), _example("parcel lost again in transit", "shipping"), _example("sunny weather today", "billing")]
    labels = {"t1": "shipping", "t2": "sales"}
    measured = group_impact(_program(), holdout, SPEC.metric(), offline_lm(), labels, "queue", budget=1_000)
    assert measured.credits == [("sales", 0), ("shipping", 2_000_000)]  # no sales example held out: measured on nothing
    assert (measured.examples_used, measured.program_runs) == (2, 4)  # the billing example has no group to measure


def test_a_free_text_output_is_one_group_of_every_demo_measured_on_every_example():
    holdout = [_example("my parcel was lost in transit", "shipping"), _example("invoice shows the wrong amount", "billing")]
    measured = group_impact(_program(), holdout, SPEC.metric(), offline_lm(), {}, None, budget=1_000)
    assert measured.credits == [(None, 1_000_000)] and measured.examples_used == 2 and measured.program_runs == 4


def test_it_never_costs_more_than_the_evaluation_it_explains():
    holdout = [_example("parcel lost in transit", "shipping")] * 10
    assert impact_budget(RewardsConfig(), len(holdout), 1) == 20 and impact_budget(RewardsConfig(impact_budget=7), 10, 1) == 7
    measured = group_impact(_program(), holdout, SPEC.metric(), offline_lm(), {"t1": "shipping", "t2": "sales"}, "queue", budget=7)
    assert measured.examples_used == 3 and measured.program_runs == 6 and measured.credits == [("sales", 0), ("shipping", 3_000_000)]


def test_a_knn_program_is_measured_by_its_pool_and_reuses_the_evaluations_answers(tmp_path):
    """KNNFewShot has no fixed demos: a group is its pool entries. The full program's answers are the
    candidate's held-out answers, which the answer cache kept when the evaluation paid for them."""
    from teleprompt_assets.core.gateway import pipeline_lm

    queues = {"shipping": "my parcel {} never arrived", "billing": "I was charged twice for invoice {}", "account": "reset the password of account {}"}
    train = [_example(text.format(i), queue, f"{queue}{i}") for queue, text in queues.items() for i in range(6)]
    program = KNNFewShot(k=3).compile(SPEC.build(), trainset=train)
    holdout = [_example(text.format(100 + i), queue) for queue, text in queues.items() for i in range(4)]
    labels = {ex.trace_id: ex.queue for ex in train}
    config = LMConfig(cache="on")
    with dspy.context(lm=pipeline_lm(offline_lm(), config, tmp_path)):  # the evaluation's candidate side
        [program(**ex.inputs()) for ex in holdout]
    lm = pipeline_lm(offline_lm(), config, tmp_path)  # the rewards step: another process, the same store
    measured = group_impact(program, holdout, SPEC.metric(), lm, labels, "queue", budget=impact_budget(RewardsConfig(), len(holdout), 1))
    assert measured.examples_used == 12 and measured.program_runs == 24
    assert (lm.engine.stats().calls, lm.engine.stats().reused) == (12, 12)
    assert dict(measured.credits) == {"account": 0, "billing": 0, "shipping": 4_000_000}  # zero-shot already answers these two: "account" is named, "billing" is the first option


def test_the_evaluations_scores_stand_for_the_full_program():
    """The candidate's held-out scores were measured by the evaluation: only the ablated runs are paid."""
    holdout = [_example("my parcel was lost in transit", "shipping").copy(trace_hash=f"0x{i}") for i in range(4)]
    labels = {"t1": "shipping", "t2": "sales"}
    fresh = group_impact(_program(), holdout, SPEC.metric(), offline_lm(), labels, "queue", budget=1_000)
    reused = group_impact(_program(), holdout, SPEC.metric(), offline_lm(), labels, "queue", budget=1_000,
                          full_scores={f"0x{i}": 1_000_000 for i in range(4)})
    assert fresh.credits == reused.credits == [("sales", 0), ("shipping", 4_000_000)]
    assert (fresh.program_runs, reused.program_runs) == (8, 4)
    assert group_impact(_program(), holdout, SPEC.metric(), offline_lm(), labels, "queue", budget=3,
                        full_scores={f"0x{i}": 1_000_000 for i in range(4)}).examples_used == 3
