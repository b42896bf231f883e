"""``teleprompt.yaml``, typed: every section is a pydantic model, validated once when the file is read.

One model per section, all here at the bottom of the package, so every stage reads the settings it
needs from one validated object (``ProjectConfig``) instead of re-validating raw dicts; a bad entry
fails at load with the entry and the field named (:func:`teleprompt_assets.core.spec.load_project`).
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT_EXPERIMENT = "teleprompt-production"


DEFAULT_MIN_HOLDOUT = 20


MAX_PAYLOAD_CHARS = 200_000  # inputs + outputs JSON text; larger traces are quarantined as enormous


WEBHOOK_ENV = "TELEPROMPT_ALERT_WEBHOOK"


WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


class ConfigError(ValueError):
    """A configuration entry is invalid; the message names the entry and the field."""


class MetricConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["exact_match", "token_f1", "function", "outcome_model"] = "exact_match"
    field: str | None = None
    outcome: str | None = Field(default=None, description="outcome_model: the feedback name to predict (numeric in [0, 1] or boolean)")
    function: str | None = Field(default=None, description="package.module:function(example, prediction, trace=None) -> float in [0, 1]")
    fields: list[str] | None = Field(default=None, description="outcome_model: the outputs the model reads (default: all of the program's outputs)")
    report_by: str | None = Field(default=None, description="a categorical input or output the A/B report groups by (default: the gold label if categorical, else baseline-score bands)")


class OptimizerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(default="auto", description="a teleprompter, or auto: a portfolio scored on the dev split (docs/optimizers.md)")
    params: dict[str, Any] = Field(default_factory=dict, description="passed to the teleprompter's constructor")
    warm_start: bool = Field(default=False, description="use the current champion as the teacher, so a daily run refines it")
    reflection_lm: str | None = Field(default=None, description="LiteLLM model string for GEPA's reflection LM (unset: the LM the compile runs with)")
    time_limit_s: int = Field(default=1800, ge=1, description="whole-compile time limit")


class SplitConfig(BaseModel):
    """Percentages of a window's distinct inputs going to each split: per label, the oldest to train,
    the newest to holdout (``training/datasets.py``, docs/optimizers.md)."""

    model_config = ConfigDict(extra="forbid")
    train: int = Field(default=50, ge=1, le=100, description="percent; at least 1: a program with no train split never learns")
    dev: int = Field(default=10, ge=0, le=100, description="percent; 0 gives validating optimizers no dev set")
    holdout: int = Field(default=40, ge=1, le=100, description="percent; at least 1: nothing is measured without a holdout")
    max_holdout: int | None = Field(default=5000, ge=30, description="held-out examples scored; a larger holdout is sampled by trace hash (None: all)")
    max_dev: int | None = Field(default=2000, ge=1, description="dev examples given to optimizers that validate; sampled likewise (None: all)")
    min_holdout: int = Field(default=DEFAULT_MIN_HOLDOUT, ge=1, description="fewest held-out examples a candidate may be promoted or attested on (see promotion.py)")

    @model_validator(mode="after")
    def _sums_to_100(self) -> SplitConfig:
        """Each part is checked on its own first (a negative part could balance another to 100)."""
        if self.train + self.dev + self.holdout != 100:
            raise ValueError(f"train + dev + holdout must be 100 (percent), got {self.train} + {self.dev} + {self.holdout} = "
                             f"{self.train + self.dev + self.holdout}")
        return self


class PromotionConfig(BaseModel):
    """Per program: what a candidate needs beyond the promotion rules (``register/promotion.py``)."""

    model_config = ConfigDict(extra="forbid")
    require_significance: bool = Field(default=False, description="promote only when the bootstrap interval's lower bound of the gain is above zero")


class CostModel(BaseModel):
    """Defaults resemble a small hosted model (about 1 s a call, cents per million tokens)."""

    model_config = ConfigDict(extra="forbid")
    latency_s: float = Field(default=1.0, ge=0)
    usd_per_1m_input_tokens: float = Field(default=0.15, ge=0)
    usd_per_1m_output_tokens: float = Field(default=0.60, ge=0)
    parallel_calls: int = Field(default=1, ge=1, description="concurrent LM calls a real deployment would make")


class ProgramConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    module: str = Field(description="import path of the dspy.Module class, package.module:Class")
    experiment: str = DEFAULT_EXPERIMENT
    metric: MetricConfig = Field(default_factory=MetricConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    outcomes: list[str] = Field(default_factory=list, description="feedback names logged as outcomes")
    split: SplitConfig = Field(default_factory=SplitConfig)
    promotion: PromotionConfig = Field(default_factory=PromotionConfig)
    prompt_token_budget: int = Field(default=4000, ge=1, description="largest rendered prompt a compiled program may have")
    cost: CostModel = Field(default_factory=CostModel, description="per-call latency and token prices for projections")
    seed: int = 0


class RewardMix(BaseModel):
    model_config = ConfigDict(extra="forbid")
    volume: Fraction = Field(default=Fraction(2, 5), ge=0)
    quality: Fraction = Field(default=Fraction(1, 5), ge=0)
    impact: Fraction = Field(default=Fraction(2, 5), ge=0)
    cap: Fraction = Field(default=Fraction(1, 2), gt=0, le=1, description="largest share any one contributor may get")


class RewardsConfig(RewardMix):
    impact_budget: int = Field(default=4_000, ge=0, description="most LM calls spent measuring demo impact per run (at ~1 s a call on a hosted LM, about an hour)")


class SamplingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    strategy: Literal["all", "stratified", "top_outcome", "recency"] = Field("all", description="how the training rows are drawn from the window")
    size: int | None = Field(None, ge=1, description="rows to draw; None keeps all")
    half_life_days: float = Field(3.0, gt=0, description="recency: a trace this many days old weighs half as much as a new one")
    seed: int = 0


class QualityConfig(BaseModel):
    """Every rule is configurable; the defaults are documented (and justified) in docs/data-quality.md."""

    model_config = ConfigDict(extra="forbid")
    score_ranges: dict[str, tuple[float, float]] = Field(default_factory=dict, description="raw range per metric; default [0, 1]; outside -> invalid_score")
    required_metrics: list[str] = Field(default_factory=list, description="metrics a trace must carry (partial scores are allowed otherwise)")
    thresholds: dict[str, float] = Field(default_factory=dict, description="minimum normalized score per metric; a missing score passes")
    outlier_z: float | None = Field(6.0, gt=0, description="robust z (median/MAD) beyond which a numeric outcome is an outlier; None: off")
    outlier_min_rows: int = Field(50, ge=3, description="outlier rules need at least this many rows")
    payload_outlier_factor: float | None = Field(50.0, gt=1, description="payload larger than this x the median (and than payload_outlier_floor) is an outlier")
    payload_outlier_floor: int = Field(20_000, ge=0, description="characters below which a payload is never an outlier")
    max_payload_chars: int = Field(MAX_PAYLOAD_CHARS, ge=1, description="hard cap on inputs + outputs (contract: payload_too_large)")
    dedupe_exact: bool = True
    dedupe_near: bool = True
    dedupe_scope: Literal["global", "per_contributor"] = Field("global", description="global: across contributors (earliest wins); per_contributor: only within one")
    near_mask_digits: bool = Field(False, description="near duplicates also ignore digits (order numbers, dates)")
    max_contributor_share: float | None = Field(0.5, gt=0, le=1, description="cap on one contributor's share of accepted rows; None: off")
    max_class_share: float | None = Field(None, gt=0, le=1, description="cap on one label class's share of accepted rows; None: off")
    metric_weights: dict[str, float] = Field(default_factory=dict, description="weight per metric in quality_weight; default 1 each")
    normalize: Literal["range", "rank"] = Field("range", description="range: (x - lo) / (hi - lo); rank: percentile within the partition")
    default_weight: float = Field(0.5, ge=0, le=1, description="quality_weight of a trace with no outcome at all")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)


class SensorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min_new_traces: int = Field(default=1, ge=1, description="new traces on a closed day before that day is re-run")
    lookback_days: int = Field(default=3, ge=1, le=31, description="closed days re-counted on every tick")
    tick_budget_s: float = Field(default=6.0, gt=0, description="counting time per tick; a larger store is counted over several ticks")


class AlertsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    webhook_url: str | None = Field(default=None, description=f"Slack-compatible incoming webhook; {WEBHOOK_ENV} overrides it")
    timeout_s: float = Field(default=5.0, gt=0, le=60)
    retries: int = Field(default=2, ge=0, le=5, description="further attempts after a failed post (5xx, 429, network)")
    dagster_ui_url: str | None = Field(default=None, description="base URL of the Dagster UI, for links in alerts")
    on_run_failure: bool = True
    on_deltaone: bool = True
    quarantine_rate_max: float | None = Field(default=0.2, ge=0, le=1, description="alert when a day's quarantine rate is above this")
    outcome_drift_max: float | None = Field(default=0.15, ge=0, description="alert when |day mean - window mean| of an outcome is above this")
    lm_error_rate_max: float | None = Field(default=0.05, ge=0, le=1, description="alert when lm_errors / lm_calls of a compile is above this")
    min_traces: int = Field(default=20, ge=1, description="anomaly rules ignore days with fewer traces than this")

    @field_validator("webhook_url", "dagster_ui_url")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError("must be an http(s) URL")
        return value or None


class AutomationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cycle: Literal["daily", "weekly", "monthly"] = "daily"
    hour: int = Field(default=1, ge=0, le=23, description="UTC hour the schedule runs, on the day after the cycle's last day")
    week_ends_on: Literal[WEEKDAYS] = Field(default="sunday", description="weekly cycle: the week's last day (the day optimized)")  # type: ignore[valid-type]
    min_new_traces: int = Field(default=0, ge=0, description="schedule: skip a program with fewer traces in the cycle's period")
    min_window_traces: int = Field(default=0, ge=0, description="schedule: skip a program with fewer traces in the training window")
    sensor: SensorConfig = Field(default_factory=SensorConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)

    @property
    def schedule_name(self) -> str:
        return f"{self.cycle}_optimization"

    @property
    def cron(self) -> str:
        """Runs the day after the cycle's last day closes (UTC): that closed day is the partition optimized."""
        if self.cycle == "daily":
            return f"0 {self.hour} * * *"
        if self.cycle == "weekly":
            run_day = (WEEKDAYS.index(self.week_ends_on) + 1) % 7  # the day after; Monday=0 here
            return f"0 {self.hour} * * {(run_day + 1) % 7}"  # cron: Sunday=0
        return f"0 {self.hour} 1 * *"

    def period(self, day: date) -> list[date]:
        """The days a cycle ending on ``day`` covers: its 'new traces' are counted over these."""
        if self.cycle == "daily":
            return [day]
        start = day - timedelta(days=6) if self.cycle == "weekly" else day.replace(day=1)
        return [start + timedelta(days=i) for i in range((day - start).days + 1)]


class LMBudget(BaseModel):
    """Per run, across all its steps: the run stops before a call that could cross a limit."""

    model_config = ConfigDict(extra="forbid")
    max_calls: int | None = Field(default=None, ge=1, description="LM calls (answers reused from the cache are free)")
    max_tokens: int | None = Field(default=None, ge=1, description="input + output tokens, as the provider reports them")
    max_usd: Decimal | None = Field(default=None, gt=0, description="cost at lm.usd_per_1m_*_tokens")


class LMConfig(BaseModel):
    """How the pipeline talks to its LM (the model itself is ``TELEPROMPT_LM``; docs/hosted-lm.md)."""

    model_config = ConfigDict(extra="forbid")
    concurrency: int = Field(default=8, ge=1, le=256, description="LM calls in flight at once per step: held-out scoring, demo impact, optimizers' num_threads")
    requests_per_minute: int | None = Field(default=None, ge=1, description="client-side rate limit shared by every step using the same LM state store")
    tokens_per_minute: int | None = Field(default=None, ge=1, description="likewise for input + output tokens (reserved at an estimate, settled from usage)")
    retries: int = Field(default=6, ge=0, le=20, description="further attempts after a 5xx, timeout or connection error")
    rate_limit_patience_s: float = Field(default=600.0, gt=0, description="longest a call waits out 429s (Retry-After, else backoff) before it fails")
    backoff_s: float = Field(default=1.0, gt=0, description="first retry's delay; doubles per attempt, with jitter; a Retry-After header wins")
    backoff_max_s: float = Field(default=60.0, gt=0)
    timeout_s: float = Field(default=60.0, gt=0, description="per call")
    usd_per_1m_input_tokens: Decimal = Field(default=Decimal(0), ge=0, description="your provider's price, for the cost budget and reports")
    usd_per_1m_output_tokens: Decimal = Field(default=Decimal(0), ge=0)
    budget: LMBudget = Field(default_factory=LMBudget)
    cache: Literal["auto", "on", "off"] = Field(default="auto", description="persistent answer cache; auto: on for a hosted LM, off for the offline LM")
    store_url: str | None = Field(default=None, description="SQLAlchemy URL of the answer cache, rate-limit and budget state (default: sqlite under TELEPROMPT_HOME)")

    @field_validator("cache", mode="before")
    @classmethod
    def _yaml_booleans(cls, value: Any) -> Any:
        """YAML reads an unquoted ``off`` / ``on`` as a boolean: take them as the words they were."""
        return {False: "off", True: "on"}.get(value, value) if isinstance(value, bool) else value

    @field_validator("budget")
    @classmethod
    def _priced(cls, budget: LMBudget, info) -> LMBudget:
        if budget.max_usd is not None and not (info.data.get("usd_per_1m_input_tokens") or info.data.get("usd_per_1m_output_tokens")):
            raise ValueError("max_usd needs lm.usd_per_1m_input_tokens or lm.usd_per_1m_output_tokens set to your provider's prices")
        return budget


class ProgramTrust(BaseModel):
    """A program's own app signers and labellers (unset: the ``trust`` section's)."""

    model_config = ConfigDict(extra="forbid")
    signers: list[str] | None = Field(default=None, min_length=1, description="EIP-55 addresses of the app keys whose signed traces this program accepts")
    labellers: list[str] | None = Field(default=None, min_length=1, description="EIP-55 addresses whose signed labels count (unset: the signers)")

    @field_validator("signers", "labellers")
    @classmethod
    def _checksummed(cls, addresses: list[str] | None) -> list[str] | None:
        from teleprompt_assets.core.addresses import address_problem

        for address in addresses or []:
            if problem := address_problem(address):
                raise ValueError(problem)
        return addresses


class TrustPolicy(BaseModel):
    """One program's effective trust settings, as curation applies them (``curate/validation.py``)."""

    model_config = ConfigDict(frozen=True)
    signers: frozenset[str]
    labellers: frozenset[str]
    unsigned: Literal["quarantine", "accept"] = "quarantine"


class TrustConfig(ProgramTrust):
    """Who vouches for traces and labels (docs/security.md#identity): the serving app signs each trace's
    contract fields, labellers sign labels, curation believes only registered keys. Without this
    section the pipeline checks no signature and says so: identity then rests on write access to the
    tracking store."""

    signers: list[str] = Field(min_length=1, description="EIP-55 addresses of the app keys whose signed traces are accepted")
    unsigned: Literal["quarantine", "accept"] = Field(
        default="quarantine", description="traces without a signature: quarantine (reason unsigned), or accept on their tags as before signing (migrating an older store)")
    programs: dict[str, ProgramTrust] = Field(default_factory=dict, description="per-program signers and labellers")

    def policy(self, program: str) -> TrustPolicy:
        """``program``'s signers and labellers: its own entry's, else the section's; labellers default to the signers."""
        own = self.programs.get(program) or ProgramTrust()
        signers = own.signers or self.signers
        return TrustPolicy(signers=frozenset(signers), labellers=frozenset(own.labellers or self.labellers or signers), unsigned=self.unsigned)


MAX_WINDOW_DAYS = 366
EARLIEST_START = date(2000, 1, 1)
LATEST_START = date.max - timedelta(days=MAX_WINDOW_DAYS + 1)  # a window and the day after it must still be dates


def start_date_problem(day: date) -> str | None:
    """Why ``day`` cannot be the first daily partition, or None. Traces carry Unix-epoch milliseconds
    and windows reach back ``window_days`` from a day: a start in year 1 failed inside ``raw_traces``
    (date arithmetic overflowed), one near 9999-12-31 would when a window reaches past it."""
    if day < EARLIEST_START:
        return f"{day} is before {EARLIEST_START}; set the first day your traces were logged"
    if day > LATEST_START:
        return f"{day} is after {LATEST_START} (9999-12-31 less the longest window); set the first day your traces were logged"
    return None


class ProjectConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start_date: date = date(2026, 1, 1)
    window_days: int = Field(default=7, ge=1, le=MAX_WINDOW_DAYS)
    rewards: RewardsConfig = Field(default_factory=RewardsConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig, description="data-quality rules (docs/data-quality.md)")
    automation: AutomationConfig = Field(default_factory=AutomationConfig, description="schedules, trigger conditions and alerts (docs/operations.md)")
    lm: LMConfig = Field(default_factory=LMConfig, description="concurrency, rate limits, retries, budget and answer cache of the LM calls (docs/hosted-lm.md)")
    programs: dict[str, ProgramConfig]
    trust: TrustConfig | None = Field(default=None, description="app signers and labellers whose signatures curation requires (docs/security.md#identity); unset: none checked")

    @field_validator("start_date")
    @classmethod
    def _plausible_start(cls, start: date) -> date:
        if problem := start_date_problem(start):
            raise ValueError(problem)
        return start

    @field_validator("trust")
    @classmethod
    def _trusted_programs_exist(cls, trust: TrustConfig | None, info) -> TrustConfig | None:
        unknown = sorted(set(trust.programs) - set(info.data.get("programs") or {})) if trust else []
        if unknown:
            raise ValueError(f"programs.{unknown[0]}: not a program of this config")
        return trust
