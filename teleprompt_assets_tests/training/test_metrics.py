import dspy

from teleprompt_assets.core.config import ProgramConfig
from teleprompt_assets.core.spec import ProgramSpec
from teleprompt_assets.training import datasets, metrics
from teleprompt_assets_tests.user_programs import traffic

MODULE = "teleprompt_assets_tests.user_programs.support_desk:TriageAndDraft"


def _window(metric: dict):
    spec = ProgramSpec("triage", ProgramConfig(module=MODULE, metric=metric))
    table = datasets.training_table(traffic.curated("triage", ("email", "customer_name"), 60, 3), spec)
    return spec, table, datasets.examples(table, spec, "train")[0]


def test_ground_truth_metrics_explain_the_expected_answer():
    spec, table, example = _window({"kind": "token_f1", "field": "reply"})
    metric, _ = metrics.window_metric(spec, table)
    assert metric.feedback(example, dspy.Prediction(reply="Thanks")) == f"Score 0.00. Expected reply: {example.reply!r}; the answer gave: 'Thanks'."


def test_an_outcome_model_explains_its_prediction_and_what_it_rewards():
    spec, table, example = _window({"kind": "outcome_model", "field": "reply", "outcome": "resolved"})
    metric, method = metrics.window_metric(spec, table)
    answer = dspy.Prediction(intent="refund", reply="Hi there")
    text = metric.feedback(example, answer)
    assert text.startswith(f"Predicted resolved for this intent and reply: {metric(example, answer):.2f} (1 is best). "
                           f"Learned from {method['model']['trained_on']} outcomes: rewards ")
    assert "reply:repeats_customer_name" in text.split("penalizes")[0]


def test_an_outcome_model_score_is_in_the_unit_interval_and_reads_missing_outputs_as_empty():
    spec, table, example = _window({"kind": "outcome_model", "field": "reply", "outcome": "resolved"})
    metric, _ = metrics.window_metric(spec, table)
    for answer in (dspy.Prediction(), dspy.Prediction(intent=None, reply=None), dspy.Prediction(intent="refund", reply="?" * 5000)):
        assert 0.0 <= metric(example, answer) <= 1.0


def test_a_users_function_metric_is_left_as_it_is():
    spec, table, _ = _window({"kind": "function", "function": "teleprompt_assets_tests.training.test_metrics:own_metric"})
    metric, _ = metrics.window_metric(spec, table)
    assert metric is own_metric and not hasattr(own_metric, "feedback")


def own_metric(example, prediction, trace=None):
    return 1.0
