from typing import Literal

import dspy

from teleprompt_assets.core.lm import OFFLINE_MODEL, build_lm, cosine, offline_lm, tokens


class Route(dspy.Signature):
    """Route a message."""

    message: str = dspy.InputField()
    queue: Literal["billing", "technical", "shipping"] = dspy.OutputField()


def test_zero_shot_picks_the_option_named_in_the_text_else_the_first():
    program = dspy.Predict(Route)
    with dspy.context(lm=offline_lm()):
        assert program(message="A shipping question about my order").queue == "shipping"
        assert program(message="My parcel never arrived").queue == "billing"


def test_answers_from_the_most_similar_demo():
    program = dspy.Predict(Route)
    program.demos = [
        dspy.Example(message="The app crashes on startup", queue="technical"),
        dspy.Example(message="My parcel has not arrived yet", queue="shipping"),
    ]
    with dspy.context(lm=offline_lm()):
        assert program(message="my parcel never arrived").queue == "shipping"
        assert program(message="the app crashes when I open settings").queue == "technical"
        assert program(message="completely unrelated words here").queue == "billing"


def test_better_demos_give_better_answers_and_chain_of_thought_works():
    cot = dspy.ChainOfThought(Route)
    with dspy.context(lm=offline_lm()):
        before = cot(message="parcel lost in transit")
        cot.predict.demos = [dspy.Example(message="parcel lost in transit again", reasoning="", queue="shipping")]
        after = cot(message="parcel lost in transit")
    assert before.queue == "billing" and after.queue == "shipping"
    assert "demonstration" in after.reasoning


def test_deterministic_and_selected_by_env(monkeypatch):
    monkeypatch.delenv("TELEPROMPT_LM", raising=False)
    assert build_lm().model == OFFLINE_MODEL
    monkeypatch.setenv("TELEPROMPT_LM", "openai/gpt-4o-mini")
    assert build_lm().model == "openai/gpt-4o-mini"
    program = dspy.Predict(Route)
    with dspy.context(lm=offline_lm()):
        assert {program(message="billing help please").queue for _ in range(5)} == {"billing"}


def test_tokens_ignore_stopwords_and_plurals():
    assert tokens("My refunds are late") == tokens("refund late")
    assert cosine(tokens("a b"), tokens("")) == 0.0


def test_simulated_latency_delays_each_call_and_changes_no_answer(monkeypatch):
    import time

    import pytest

    program = dspy.Predict(Route)
    with dspy.context(lm=offline_lm()):
        plain = program(message="A shipping question").queue
    monkeypatch.setenv("TELEPROMPT_OFFLINE_LATENCY_MS", "150")
    started = time.perf_counter()
    with dspy.context(lm=build_lm()):
        slow = [program(message="A shipping question").queue for _ in range(2)]
    assert time.perf_counter() - started >= 0.3 and slow == [plain, plain]
    monkeypatch.setenv("TELEPROMPT_OFFLINE_LATENCY_MS", "-1")
    with pytest.raises(ValueError, match="TELEPROMPT_OFFLINE_LATENCY_MS must be >= 0"):
        offline_lm()


def test_answers_in_json_when_the_json_adapter_asks():
    program = dspy.Predict(Route)
    program.demos = [dspy.Example(message="My parcel has not arrived yet", queue="shipping")]
    lm = offline_lm()
    with dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
        assert program(message="my parcel never arrived").queue == "shipping"  # the demo, rendered as JSON, is read
        assert program(message="A technical question").queue == "technical"  # options read from the JSON structure
    assert lm.history[-1]["outputs"][0] == '{"queue": "technical"}'


def test_answers_gepas_instruction_proposer_deterministically():
    """GEPA's default proposer asks its reflection LM through the JSONAdapter for a new instruction;
    the offline LM proposes the first sentence of the current one, the same every time."""
    from dspy.teleprompt.gepa.instruction_proposal import InstructionProposer

    proposer = InstructionProposer()
    examples = [{"Inputs": {"message": "parcel lost"}, "Generated Outputs": {"queue": "billing"}, "Feedback": "expected shipping"}]
    with dspy.context(lm=offline_lm()):
        proposals = [proposer({"route": "Route a message. Be brief."}, {"route": examples}, ["route"]) for _ in range(2)]
    assert proposals == [{"route": "Route a message."}] * 2


def test_a_self_hosted_endpoint_gets_its_own_key_and_only_the_configured_model(monkeypatch):
    import pytest

    monkeypatch.setenv("OPENAI_API_KEY", "sk-the-provider-key")
    monkeypatch.setenv("TELEPROMPT_LM", "openai/llama3.1")
    monkeypatch.setenv("TELEPROMPT_LM_API_BASE", "http://gpu-box:11434/v1")
    local = build_lm()
    assert local.kwargs["api_base"] == "http://gpu-box:11434/v1" and local.kwargs["api_key"] == "unused"  # never the provider's key
    monkeypatch.setenv("TELEPROMPT_LM_API_KEY", "sk-local")
    assert build_lm().kwargs["api_key"] == "sk-local"
    reflection = build_lm("openai/gpt-4o")  # another model named in a config goes to its provider, not to the local server
    assert "api_base" not in reflection.kwargs and "api_key" not in reflection.kwargs
    monkeypatch.setenv("TELEPROMPT_LM_ENGINE", "grpc")
    with pytest.raises(ValueError, match="TELEPROMPT_LM_ENGINE='grpc': use auto"):
        build_lm()
