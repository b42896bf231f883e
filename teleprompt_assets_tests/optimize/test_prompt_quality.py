import dspy

from teleprompt_assets.core.spec import load_project
from teleprompt_assets.optimize.prompt_quality import check_program

SPEC = load_project("teleprompt.yaml")[1]["ticket_router"]


def _program(*demos):
    program = SPEC.build()
    program.route.demos = list(demos)
    return program


def test_clean_program_passes():
    report = check_program(_program(dspy.Example(message="a b", queue="sales", trace_id="t1")), {"t1"}, {"h1"}, 4000)
    assert report.passed and report.prompt_tokens["route"] > 0


def test_each_problem_names_the_demo_and_field():
    program = _program(
        dspy.Example(message="a", queue="sales", trace_id="t1"),
        dspy.Example(message="a", queue="billing", trace_id="t2"),
        dspy.Example(message="b", queue="", trace_id="t3"),
        dspy.Example(message="c", queue="sales", trace_id="h1"),
        dspy.Example(message="d", queue="sales", trace_id="q9"),
        dspy.Example(message="e", queue="sales"),
    )
    program.route.signature = program.route.signature.with_instructions("   ")
    problems = check_program(program, {"t1", "t2", "t3"}, {"h1"}, 50).problems
    assert "route: instructions are empty" in problems
    assert "route.demos[1]: duplicates route.demos[0]" in problems
    assert "route.demos[2]: missing queue" in problems
    assert "route.demos[3]: drawn from held-out trace h1" in problems
    assert "route.demos[4]: trace q9 is not an accepted training trace" in problems
    assert any(p.startswith("route.demos[5]: no source trace") for p in problems)
    assert any("over the budget of 50" in p for p in problems)


def _two_step():
    from teleprompt_assets.core.spec import forward_inputs
    from teleprompt_assets_tests.user_programs.support_desk import TriageAndDraft

    assert forward_inputs(TriageAndDraft) == ("email", "customer_name")
    return TriageAndDraft()


def _ticket(trace_id: str, name: str, email: str = "How do I cancel my account?") -> dspy.Example:
    return dspy.Example(email=email, customer_name=name, intent="cancel", reply=f"Hi {name}, done.", trace_id=trace_id)


def test_demos_are_duplicates_when_they_repeat_what_their_predictor_sees():
    program = _two_step()
    program.classify.demos = [_ticket("t1", "Ada"), _ticket("t2", "Grace")]  # one email, two customers: one input for classify
    program.draft.predict.demos = [_ticket("t1", "Ada"), _ticket("t2", "Grace")]  # two inputs for draft
    problems = check_program(program, {"t1", "t2"}, set(), 4000).problems
    assert problems == ["classify.demos[1]: duplicates classify.demos[0]"]


def test_a_knn_pool_entry_is_a_duplicate_only_when_it_repeats_the_program_inputs():
    """The pool is shared by every predictor: what identifies an entry is the training example's
    inputs. Each call shows a predictor its neighbours distinct on what it sees (see test_knn)."""
    from teleprompt_assets.optimize import knn

    program = knn.KNNProgram(_two_step(), [_ticket("t1", "Ada"), _ticket("t2", "Grace"), _ticket("t3", "Ada")], k=2)
    problems = check_program(program, {"t1", "t2", "t3"}, set(), 4000).problems
    assert problems == ["classify.pool[2]: duplicates classify.pool[0]", "draft.predict.pool[2]: duplicates draft.predict.pool[0]"]


def test_zero_and_false_are_answers_not_missing_fields():
    class Count(dspy.Signature):
        """Count the refunds asked for."""

        message: str = dspy.InputField()
        refunds: int = dspy.OutputField()
        urgent: bool = dspy.OutputField()

    program = dspy.Predict(Count)
    program.demos = [dspy.Example(message="hello", refunds=0, urgent=False, trace_id="t1"), dspy.Example(message="hi", refunds=None, urgent="", trace_id="t2")]
    assert check_program(program, {"t1", "t2"}, set(), 4000).problems == ["self.demos[1]: missing refunds, urgent"]
