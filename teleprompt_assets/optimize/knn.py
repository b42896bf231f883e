"""KNNFewShot: each call gets the k training examples nearest to its input as demos.

DSPy's ``KNNFewShot.compile`` returns a copy of the student whose ``forward`` is replaced by a
closure; the training set it retrieves from lives only in that closure. ``dump_state`` (and with it
``program.save("x.json")``, this project's ``program_state.json``, the programHash, the evaluation,
which rebuilds the candidate from its state, and the attestation) would see an uncompiled program.
Here the same algorithm is a module, :class:`KNNProgram`, whose state records everything that
decides which demos a call gets: the candidate pool (the training examples, each with its
``trace_id``, ``trace_hash`` and ``contributor``), ``k``, the input fields and the embedder. So the
compiled program hashes, registers, reloads (from JSON state or pickled by ``mlflow.dspy``) and
attests like any other.

Differences from DSPy's ``KNNFewShot``, on purpose:
- demos are the k nearest labeled examples as they are (no per-call bootstrapping): a call costs
  the program's own LM calls and nothing more, and every demo a call sees is an accepted training
  trace. DSPy bootstraps per call (the teacher runs on the neighbours every time, without a
  metric, producing demos no trace backs), so ``max_bootstrapped_demos`` > 0 is rejected;
- neighbours are ordered nearest first, ties kept in pool order (DSPy shuffles them);
- each predictor is shown its neighbours distinct on the inputs it sees (nearest kept): in a
  multi-step program ``classify(email)`` is not shown one email twice for two customers;
- the text embedded is the input values, one per line, in the program's ``forward`` order.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import dspy
import numpy as np
from dspy.teleprompt.teleprompt import Teleprompter

from teleprompt_assets.core import embedder as embedders
from teleprompt_assets.core.optimizers import KNNParams
from teleprompt_assets.core.spec import forward_inputs

STATE_KEY = "__knn__"


def candidate_pool(trainset: Sequence[dspy.Example], input_fields: Sequence[str], max_pool: int) -> list[dspy.Example]:
    """The training examples a call may draw demos from: one per distinct input (the first), and past
    ``max_pool`` those with the smallest trace hash (a fixed uniform sample), in training order."""
    seen: set[tuple[str, ...]] = set()
    pool = []
    for example in trainset:
        key = tuple(str(example.get(f)) for f in input_fields)
        if key not in seen:
            seen.add(key)
            pool.append(example)
    if len(pool) > max_pool:
        kept = set(sorted(range(len(pool)), key=lambda i: (str(pool[i].get("trace_hash") or ""), i))[:max_pool])
        pool = [ex for i, ex in enumerate(pool) if i in kept]
    return pool


class KNNProgram(dspy.Module):
    """``program`` with the ``k`` nearest ``pool`` examples as every predictor's demos, per call.

    Its parameters (predictors) are the wrapped program's under the same names, so its state is the
    program's state plus one ``__knn__`` entry, and checks that walk predictors see the same names.
    """

    def __init__(self, program: dspy.Module, pool: Sequence[dspy.Example] = (), k: int = 3,
                 embedder: dict[str, Any] | None = None, input_fields: Sequence[str] = ()) -> None:
        super().__init__()
        if any(name == STATE_KEY for name, _ in program.named_parameters()):
            raise ValueError(f"a predictor named {STATE_KEY!r} would clash with the KNN state")
        self.program = program
        self.pool = list(pool)
        self.k = k
        self.embedder = dict(embedder or embedders.describe(embedders.HASHING))
        self.input_fields = tuple(input_fields) or forward_inputs(type(program))
        self._clear_cache()

    # --- state ---------------------------------------------------------------------------------
    def named_parameters(self):
        return self.program.named_parameters()

    def dump_state(self, json_mode: bool = True) -> dict[str, Any]:
        knn = {"k": self.k, "embedder": self.embedder, "input_fields": list(self.input_fields), "pool": [ex.toDict() for ex in self.pool]}
        return {**self.program.dump_state(json_mode=json_mode), STATE_KEY: knn}

    def load_state(self, state: dict[str, Any], **kwargs: Any) -> None:
        knn = state[STATE_KEY]
        self.program.load_state({k: v for k, v in state.items() if k != STATE_KEY}, **kwargs)
        self.k = int(knn["k"])
        self.embedder = dict(knn["embedder"])
        self.input_fields = tuple(knn["input_fields"])
        self.pool = [dspy.Example(**row).with_inputs(*self.input_fields) for row in knn["pool"]]
        self._clear_cache()

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("_vectors", None)  # derived from the pool; recomputed on first use
        state.pop("_embed", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._clear_cache()

    def _clear_cache(self) -> None:
        self._vectors: np.ndarray | None = None
        self._embed: dspy.Embedder | None = None

    # --- retrieval -----------------------------------------------------------------------------
    def text(self, inputs: dict[str, Any]) -> str:
        return "\n".join(str(inputs.get(f, "") or "") for f in self.input_fields)

    def embed_pool(self) -> np.ndarray:
        """The pool's unit vectors (computed once per process; a hosted embedder is called here)."""
        if self._vectors is None:
            self._embed = embedders.build(self.embedder)
            texts = [self.text(ex) for ex in self.pool]
            self._vectors = self._unit(self._embed(texts), len(texts)) if texts else np.zeros((0, 0), dtype=np.float32)
        return self._vectors

    def nearest(self, **inputs: Any) -> list[dspy.Example]:
        """The ``k`` pool examples most similar to ``inputs``, nearest first, ties in pool order."""
        if not self.pool:
            return []
        vectors = self.embed_pool()
        query = self._unit(self._embed([self.text(inputs)]), 1)[0]
        order = np.argsort(-(vectors @ query), kind="stable")[: self.k]
        return [self.pool[i] for i in order]

    @staticmethod
    def _unit(vectors: Any, rows: int) -> np.ndarray:
        array = np.asarray(vectors, dtype=np.float32)
        if array.ndim != 2 or array.shape[0] != rows:
            raise ValueError(f"the embedder returned shape {array.shape} for {rows} texts")
        norms = np.linalg.norm(array, axis=1, keepdims=True)
        return array / np.where(norms == 0, 1.0, norms)

    # --- calls ---------------------------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        bound = inspect.signature(type(self.program).forward).bind(self.program, *args, **kwargs)  # program.forward would warn
        demos = self.nearest(**{f: bound.arguments.get(f) for f in self.input_fields})
        program = self.program.deepcopy()  # per call: concurrent calls must not see each other's demos
        for predictor in program.predictors():
            predictor.demos = distinct_by(demos, list(predictor.signature.input_fields))
        try:
            return program(*args, **kwargs)
        finally:
            _retarget_trace(program, self.program)


def needed_fields(predictor: dspy.Predict) -> list[str]:
    """The fields a demo must fill for ``predictor`` (a ChainOfThought's reasoning is optional)."""
    signature = predictor.signature
    return [f for f in (*signature.input_fields, *signature.output_fields) if f != "reasoning"]


def holds(example: dspy.Example, fields: Sequence[str]) -> bool:
    """Every field has a value (``0`` and ``False`` are values; ``None`` and blank text are not)."""
    return not missing_fields(example, fields)


def missing_fields(example: dspy.Example, fields: Sequence[str]) -> list[str]:
    return [f for f in fields if example.get(f) is None or str(example.get(f)).strip() == ""]


def unlabeled_message(program: dspy.Module, examples: Sequence[dspy.Example]) -> str:
    """Why no example can be a demo: the first predictor every example lacks a field of, and those fields."""
    for name, predictor in program.named_predictors():
        fields = needed_fields(predictor)
        if not any(holds(ex, fields) for ex in examples):
            missing = [f for f in fields if not any(holds(ex, [f]) for ex in examples)]
            return (f"no training example holds every field step '{name}' needs (missing: {', '.join(missing) or 'a complete set'}); "
                    "log each step's output (return it from the program's forward) or pick a bootstrapping optimizer")
    return "no training example holds every field of every step; log each step's output"


def distinct_by(examples: Sequence[dspy.Example], fields: Sequence[str]) -> list[dspy.Example]:
    """The first example per value of ``fields``, in order: what one predictor needs to be shown once.

    The pool is distinct on the program's inputs; a predictor that sees fewer of them (``classify``
    sees the email, not the customer's name) may find two neighbours alike, and is shown the nearer.
    """
    seen: set[tuple[str, ...]] = set()
    kept = []
    for example in examples:
        key = tuple(str(example.get(f, "")) for f in fields)
        if key not in seen:
            seen.add(key)
            kept.append(example)
    return kept


def _retarget_trace(copy: dspy.Module, original: dspy.Module) -> None:
    """Record the per-call copy's steps in DSPy's trace under the original predictors, so an optimizer
    that reads traces (BootstrapFewShot with this program as teacher) finds the predictors it knows."""
    trace = dspy.settings.trace
    if not trace:
        return
    originals = {id(c): o for (_, c), (_, o) in zip(copy.named_predictors(), original.named_predictors())}
    for i, (predictor, *rest) in enumerate(trace):
        if id(predictor) in originals:
            trace[i] = (originals[id(predictor)], *rest)


class KNNFewShot(Teleprompter):
    """The teleprompter: ``KNNFewShot(**optimizer.params).compile(student, trainset=...)`` -> :class:`KNNProgram`."""

    def __init__(self, **params: Any) -> None:
        self.params = KNNParams.parse(params)

    def compile(self, student: dspy.Module, *, trainset: Sequence[dspy.Example]) -> KNNProgram:
        """No LM calls: the pool is recorded and embedded once (so a bad embedder fails here, not later).

        Every predictor is shown pool entries, so an entry must hold every field of every predictor;
        when none does (traces that log only the last step's output) there is nothing to show.
        """
        input_fields = forward_inputs(type(student))
        complete = [ex for ex in trainset if all(holds(ex, needed_fields(p)) for p in student.predictors())]
        if trainset and not complete:
            raise ValueError(unlabeled_message(student, trainset))
        program = KNNProgram(student.reset_copy(), candidate_pool(complete, input_fields, self.params.max_pool), self.params.k,
                             self.params.describe_embedder(), input_fields)
        program.embed_pool()
        return program


def is_knn_state(state: dict[str, Any]) -> bool:
    return STATE_KEY in state


def pool_trace_ids(program: dspy.Module) -> list[str | None]:
    return [ex.get("trace_id") for ex in program.pool] if isinstance(program, KNNProgram) else []


def widest_demos(program: dspy.Module, fields: Sequence[str]) -> list[dspy.Example]:
    """The ``k`` pool examples with the longest ``fields``: the largest prompt a call can render."""
    if not isinstance(program, KNNProgram):
        return []
    return sorted(program.pool, key=lambda ex: -sum(len(str(ex.get(f, "") or "")) for f in fields))[: program.k]
