"""Checks a compiled program must pass before it may be evaluated or registered.

Demos are the product of optimization and the thing a user's LM will read on every call, so they
are checked for what would silently hurt production: incomplete or duplicated demos, demos drawn
from data the optimizer must not see (quarantined or held-out traces), missing instructions, and
prompts too long for the budget. Each problem names the predictor, the demo and the field.

Demos are duplicates when they share the values of every input their predictor sees: in a
multi-step program ``classify(email)`` must not be shown one email twice, though the program saw it
from two customers.

A KNNFewShot program has no fixed demos; each call shows ``k`` examples of its candidate pool. Every
pool entry is checked as a demo would be (named ``<predictor>.pool[i]``), except that a duplicate is
an entry repeating another's program inputs (what identifies a training example; each call then
shows every predictor its neighbours distinct on that predictor's inputs). The prompt budget is
checked against the worst call: the ``k`` widest pool entries rendered as demos.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import dspy
from dspy.adapters import ChatAdapter

from teleprompt_assets.optimize import knn

CHARS_PER_TOKEN = 4  # a conservative estimate for English prompts; real tokenizers vary


@dataclass(frozen=True)
class PromptReport:
    problems: list[str]
    prompt_tokens: dict[str, int]

    @property
    def passed(self) -> bool:
        return not self.problems


def estimate_tokens(messages: list[dict]) -> int:
    return sum(len(str(m.get("content", ""))) for m in messages) // CHARS_PER_TOKEN + 1


def check_program(program: dspy.Module, allowed_trace_ids: Collection[str], forbidden_trace_ids: Collection[str], token_budget: int) -> PromptReport:
    """``allowed``: the accepted training traces; ``forbidden``: holdout (and anything else held back)."""
    problems: list[str] = []
    tokens: dict[str, int] = {}
    pool = program.pool if isinstance(program, knn.KNNProgram) else []
    pool_identity = list(program.input_fields) if isinstance(program, knn.KNNProgram) else []
    for name, predictor in program.named_predictors():
        signature = predictor.signature
        if not (signature.instructions or "").strip():
            problems.append(f"{name}: instructions are empty")
        fields = knn.needed_fields(predictor)
        problems += _demo_problems(f"{name}.demos", predictor.demos, list(signature.input_fields), fields, allowed_trace_ids, forbidden_trace_ids)
        problems += _demo_problems(f"{name}.pool", pool, pool_identity, fields, allowed_trace_ids, forbidden_trace_ids)
        shown = [*predictor.demos, *knn.widest_demos(program, fields)]
        placeholder = {f: "…" for f in signature.input_fields}
        tokens[name] = estimate_tokens(ChatAdapter().format(signature, demos=[d.toDict() if hasattr(d, "toDict") else dict(d) for d in shown], inputs=placeholder))
        if tokens[name] > token_budget:
            problems.append(f"{name}: rendered prompt is ~{tokens[name]} tokens, over the budget of {token_budget}")
    return PromptReport(problems, tokens)


def _demo_problems(where: str, demos: list, identity: list[str], fields: list[str], allowed_trace_ids: Collection[str],
                   forbidden_trace_ids: Collection[str]) -> list[str]:
    """``identity``: the fields two entries may not share all of (a predictor's inputs for its demos,
    the program's inputs for a KNN pool, which every predictor draws from)."""
    problems: list[str] = []
    seen: dict[tuple, int] = {}
    for i, demo in enumerate(demos):
        at = f"{where}[{i}]"
        missing = knn.missing_fields(demo, fields)
        if missing:
            problems.append(f"{at}: missing {', '.join(missing)}")
        trace_id = demo.get("trace_id")
        if trace_id is None:
            problems.append(f"{at}: no source trace (cannot prove it came from accepted training data)")
        elif trace_id in forbidden_trace_ids:
            problems.append(f"{at}: drawn from held-out trace {trace_id}")
        elif trace_id not in allowed_trace_ids:
            problems.append(f"{at}: trace {trace_id} is not an accepted training trace")
        key = tuple(str(demo.get(f, "")) for f in identity)
        if key in seen:
            problems.append(f"{at}: duplicates {where}[{seen[key]}]")
        seen.setdefault(key, i)
    return problems
