import dspy

from teleprompt_assets.core.lm import offline_lm
from teleprompt_assets.core.usage import Progress, metered
from teleprompt_assets.evaluate.scoring import score_pair
from teleprompt_assets.optimize.teleprompters import compile_program
from teleprompt_assets_tests.optimize.test_teleprompters import SPEC as BOOTSTRAP_SPEC
from teleprompt_assets_tests.optimize.test_teleprompters import _examples

SPEC = BOOTSTRAP_SPEC  # the sample program, compiled with BootstrapFewShot


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        self.now += 4.0  # every reading is 4 s later: a report at most every third call with every_s=10
        return self.now


def test_progress_reports_lm_calls_while_compiling_at_the_configured_pace():
    lines = []
    progress = Progress(lines.append, "compiling ticket_router", every_s=10, clock=Clock())
    lm = offline_lm()
    with metered(lm, progress) as usage:
        compile_program(SPEC, _examples(), SPEC.metric())
    assert progress.calls == usage.calls > 0 and progress.errors == 0
    assert lines and all(line.startswith("compiling ticket_router: ") and "LM calls" in line for line in lines)
    assert len(lines) <= progress.calls
    assert dspy.settings.callbacks == []  # the callback is scoped to the block


def test_evaluation_reports_progress_per_tenth_and_at_the_end():
    program = SPEC.build()
    seen = []
    scores = score_pair(program, program, _examples() * 4, SPEC.metric(), offline_lm(), "queue", progress=lambda side, done, total: seen.append((side, done, total)))
    assert len(scores) == 24
    for side in ("baseline", "candidate"):  # all baseline answers first, then the candidate's
        done = [d for s, d, total in seen if s == side]
        assert done[-1] == 24 and done == sorted(set(done)) and 10 <= len(done) <= 13
    assert all(total == 24 for *_, total in seen) and seen[-1] == ("candidate", 24, 24)
    assert [s for s, *_ in seen] == sorted(s for s, *_ in seen)
