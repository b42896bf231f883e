import dspy

from teleprompt_assets.programs import load_project
from teleprompt_assets.prompt_quality import check_program

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
