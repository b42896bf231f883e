"""Which teleprompters a config may name, and which parameters each accepts, checked when the config
loads (not minutes into a run). The teleprompters themselves are built in
:mod:`teleprompt_assets.optimize.teleprompters`; ``KNNFewShot`` is the project's own
(:mod:`teleprompt_assets.optimize.knn`), its parameters are :class:`KNNParams`.
"""

from __future__ import annotations

import inspect
from typing import Any

import dspy
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from teleprompt_assets.core import embedder as embedders
from teleprompt_assets.core.config import OptimizerConfig

KNN = "KNNFewShot"
AUTO = "auto"
TELEPROMPTERS: dict[str, type] = {
    "LabeledFewShot": dspy.LabeledFewShot,
    "BootstrapFewShot": dspy.BootstrapFewShot,
    "BootstrapFewShotWithRandomSearch": dspy.BootstrapFewShotWithRandomSearch,
    "COPRO": dspy.COPRO,
    "MIPROv2": dspy.MIPROv2,
    "GEPA": dspy.GEPA,
}
_TAKES_NO_TEACHER = {"GEPA"}  # dspy.GEPA.compile takes a teacher argument only to assert it is None
# Parameters of a teleprompter's compile() rather than its constructor, accepted in optimizer.params.
COMPILE_PARAMS: dict[str, set[str]] = {"MIPROv2": {"num_trials", "minibatch", "minibatch_size"}}
_GEPA_BUDGETS = ("auto", "max_metric_calls", "max_full_evals")
_LM_PARAMS = {"reflection_lm": "set optimizer.reflection_lm to a LiteLLM model string",
              "prompt_model": "the compile's LM (TELEPROMPT_LM) is used", "task_model": "the compile's LM (TELEPROMPT_LM) is used"}
MAX_THREADS = 64
MAX_K = 32
MAX_POOL = 50_000
_SET_BY_PIPELINE = {"trainset": "the window's train split", "vectorizer": "params.embedder"}
_PER_CALL_BOOTSTRAP = {"max_labeled_demos", "max_rounds", "metric_threshold", "teacher_settings", "max_errors"}


def validate_optimizer(config: OptimizerConfig) -> None:
    """Fail before a run starts when the optimizer or one of its parameters is unknown, out of range,
    or a combination the teleprompter would refuse only once it runs."""
    if config.name == AUTO:
        for candidate in AutoParams.parse(config.params).configs(config):
            try:
                validate_optimizer(candidate)
            except ValueError as exc:
                raise ValueError(f"params (portfolio entry {candidate.name}): {exc}") from None
        return
    cls = TELEPROMPTERS.get(config.name)
    if cls is None and config.name != KNN:
        raise ValueError(f"name: unknown optimizer '{config.name}' (choose from {', '.join([AUTO, *TELEPROMPTERS, KNN])})")
    if config.name == KNN:
        KNNParams.parse(config.params)
        if config.warm_start:
            raise ValueError(f"warm_start: {KNN} shows labeled training examples and runs no teacher; set warm_start: false")
        return
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "metric", "args", "kwargs", "_kwargs"}
    accepted |= COMPILE_PARAMS.get(config.name, set())
    for key, value in config.params.items():
        if key not in accepted:
            raise ValueError(f"params.{key}: not a parameter of {config.name} (accepted: {', '.join(sorted(accepted))})")
        if key in _LM_PARAMS:
            raise ValueError(f"params.{key}: takes an LM object, which a config cannot hold; {_LM_PARAMS[key]}")
        if key.startswith(("max_", "num_")) and not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
            raise ValueError(f"params.{key}: must be a non-negative integer, got {value!r}")
    if config.params.get("num_threads", 1) > MAX_THREADS:
        raise ValueError(f"params.num_threads: at most {MAX_THREADS}")
    if config.name == "COPRO" and config.params.get("breadth", 10) <= 1:
        raise ValueError("params.breadth: COPRO needs breadth > 1")
    if config.name == "MIPROv2":
        import importlib.util

        if importlib.util.find_spec("optuna") is None:
            raise ValueError("name: MIPROv2 needs the optuna package")
        _check_mipro_budget(config.params)
    if config.name == "GEPA":
        budgets = [b for b in _GEPA_BUDGETS if config.params.get(b) is not None]
        if len(budgets) != 1:
            raise ValueError(f"params: GEPA needs exactly one budget of {', '.join(_GEPA_BUDGETS)} (got {', '.join(budgets) or 'none'})")
    if config.name in _TAKES_NO_TEACHER and config.warm_start:
        raise ValueError(f"warm_start: {config.name} takes no teacher; set warm_start: false")


def _check_mipro_budget(params: dict[str, Any]) -> None:
    """MIPROv2 sizes its search either by ``auto`` (default ``light``) or by both ``num_candidates``
    and ``num_trials``; DSPy refuses a mix only when compile starts."""
    auto = params.get("auto", "light")
    chosen = [p for p in ("num_candidates", "num_trials") if params.get(p) is not None]
    if auto is not None and chosen:
        raise ValueError(f"params.{chosen[0]}: MIPROv2 derives it from auto={auto!r}; set auto: null to choose num_candidates and num_trials")
    if auto is None and len(chosen) != 2:
        raise ValueError("params.auto: with auto: null MIPROv2 needs both num_candidates and num_trials")


class KNNParams(BaseModel):
    """``optimizer.params`` of ``KNNFewShot``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    k: int = Field(default=3, ge=1, le=MAX_K, description="nearest training examples attached as demos to each call")
    embedder: str = Field(default=embedders.HASHING, min_length=1, description="'hashing' (local, lexical) or a LiteLLM embedding model name")
    dimensions: int | None = Field(default=None, ge=64, le=65_536, description=f"hashing only (default {embedders.DEFAULT_DIMENSIONS})")
    ngrams: int | None = Field(default=None, ge=1, le=3, description=f"hashing only: word n-grams up to this length (default {embedders.DEFAULT_NGRAMS})")
    max_pool: int = Field(default=5_000, ge=1, le=MAX_POOL, description="largest candidate pool; past it the smallest trace hashes are kept")
    max_bootstrapped_demos: int = Field(default=0, ge=0, description="must be 0: no per-call bootstrapping")

    @model_validator(mode="after")
    def _consistent(self) -> KNNParams:
        if self.max_bootstrapped_demos:
            raise ValueError(
                "max_bootstrapped_demos: must be 0. DSPy's KNNFewShot would re-run the teacher on the neighbours of every "
                f"served call (min(k, {self.max_bootstrapped_demos}) extra program runs per call, in production and in "
                "evaluation), without a metric, and show demos no training trace backs")
        if self.k > self.max_pool:
            raise ValueError(f"k: {self.k} demos per call from a pool of at most max_pool={self.max_pool} examples")
        if self.embedder != embedders.HASHING and (self.dimensions is not None or self.ngrams is not None):
            raise ValueError(f"dimensions, ngrams: only for the hashing embedder, not {self.embedder!r}")
        return self

    @classmethod
    def parse(cls, params: dict[str, Any]) -> KNNParams:
        """Validate, raising ``ValueError("params.<field>: ...")``."""
        for key in params:
            if key in _SET_BY_PIPELINE:
                raise ValueError(f"params.{key}: set by the pipeline ({_SET_BY_PIPELINE[key]})")
            if key in _PER_CALL_BOOTSTRAP:
                raise ValueError(f"params.{key}: a BootstrapFewShot argument; KNNFewShot here attaches the k nearest labeled examples (set params.k)")
        try:
            return cls.model_validate(params)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            if first["type"] == "extra_forbidden":
                message = f"params.{where}: not a parameter of {KNN} (accepted: {', '.join(cls.model_fields)})"
            else:
                message = f"params.{where}: {first['msg']}" if where else f"params.{first['msg'].removeprefix('Value error, ')}"
            raise ValueError(message) from None

    def describe_embedder(self) -> dict[str, Any]:
        return embedders.describe(self.embedder, self.dimensions, self.ngrams)


PORTFOLIO = (KNN, "BootstrapFewShot", "BootstrapFewShotWithRandomSearch", "MIPROv2")


class AutoParams(BaseModel):
    """``optimizer.params`` of ``auto``: a portfolio of teleprompters, each compiled on the train split
    and scored on the dev split within one LM-call budget; the best on dev is registered
    (:mod:`teleprompt_assets.optimize.portfolio`, docs/optimizers.md)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    candidates: list[str] = Field(default_factory=lambda: list(PORTFOLIO), min_length=1,
                                  description="teleprompters tried, in this order; a tie on dev goes to the earlier one")
    budget: int = Field(default=300, ge=0, description="most LM calls compiling and scoring the candidates; one whose estimate does not fit is skipped")
    max_dev: int = Field(default=30, ge=1, description="dev examples each candidate is scored on (a fixed sample by trace hash)")
    max_bootstrapped_demos: int = Field(default=4, ge=0)
    max_labeled_demos: int = Field(default=16, ge=0)
    metric_threshold: float | None = Field(default=None, ge=0, le=1, description="bootstrapping teleprompters: the score a teacher's answer needs to become a demo")
    k: int = Field(default=3, ge=1, le=MAX_K, description="KNNFewShot: demos per call")
    num_candidate_programs: int = Field(default=1, ge=1, description="BootstrapFewShotWithRandomSearch: random demo sets beyond its three fixed ones")
    mipro_candidates: int = Field(default=3, ge=2, description="MIPROv2: instruction and demo-set candidates")
    mipro_trials: int = Field(default=4, ge=1, description="MIPROv2: search trials, each scoring the whole dev sample")

    @model_validator(mode="after")
    def _known(self) -> AutoParams:
        for name in self.candidates:
            if name not in PORTFOLIO + ("LabeledFewShot",):
                raise ValueError(f"candidates: '{name}' is not a portfolio teleprompter (choose from {', '.join(PORTFOLIO + ('LabeledFewShot',))})")
        if len(set(self.candidates)) != len(self.candidates):
            raise ValueError("candidates: each teleprompter once")
        return self

    @classmethod
    def parse(cls, params: dict[str, Any]) -> AutoParams:
        try:
            return cls.model_validate(params)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            if first["type"] == "extra_forbidden":
                raise ValueError(f"params.{where}: not a parameter of auto (accepted: {', '.join(cls.model_fields)})") from None
            raise ValueError(f"params.{where}: {first['msg'].removeprefix('Value error, ')}" if where else f"params.{first['msg'].removeprefix('Value error, ')}") from None

    def configs(self, config: OptimizerConfig) -> list[OptimizerConfig]:
        """One optimizer config per candidate, with the portfolio's demo limits and sizes."""
        demos: dict[str, Any] = {"max_bootstrapped_demos": self.max_bootstrapped_demos, "max_labeled_demos": self.max_labeled_demos}
        if self.metric_threshold is not None:
            demos["metric_threshold"] = self.metric_threshold
        params: dict[str, dict[str, Any]] = {
            KNN: {"k": self.k},
            "LabeledFewShot": {"k": self.max_labeled_demos},
            "BootstrapFewShot": demos,
            "BootstrapFewShotWithRandomSearch": demos | {"num_candidate_programs": self.num_candidate_programs},
            "MIPROv2": demos | {"auto": None, "num_candidates": self.mipro_candidates, "num_trials": self.mipro_trials, "minibatch": False},
        }
        warm = lambda name: config.warm_start and name not in (KNN, "LabeledFewShot")  # noqa: E731
        return [config.model_copy(update={"name": name, "params": params[name], "warm_start": warm(name)}) for name in self.candidates]
