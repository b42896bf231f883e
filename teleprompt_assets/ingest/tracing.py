"""The trace contract (DESIGN §3): how a production app logs a labeled call so we can learn from it.

Apps call :func:`connect_app` once, :func:`traced_call` around their DSPy program (with
``mlflow.dspy.autolog()`` on, the program's own spans nest under the root span) and later
:func:`label_trace` when outcomes arrive; README.md's example is run verbatim by the tests.
Everything the pipeline reads is defined here, so the reader and the writer cannot drift apart.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import AssessmentSource, AssessmentSourceType
from mlflow.exceptions import MlflowException
from mlflow.tracing.provider import safe_set_span_in_context

from teleprompt_assets.core.config import DEFAULT_EXPERIMENT
from teleprompt_assets.core.settings import load_settings
from teleprompt_assets.core.tracking import experiment_id

PROGRAM_TAG = "teleprompt.program"
CONTRIBUTOR_TAG = "teleprompt.contributor"


def connect_app(experiment: str = DEFAULT_EXPERIMENT) -> str:
    """Point this process's MLflow at the store the pipeline reads and make ``experiment`` current.

    The store and the experiment's artifact location resolve as the pipeline resolves them, so an
    app cannot log where the pipeline never looks, and trace payloads never land in ``./mlruns``.
    MLflow's trace export settings are left as the app has them. Returns the experiment id.
    """
    settings = load_settings()
    if settings.tracking_uri.startswith("sqlite:///"):
        Path(settings.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.registry_uri)
    exp_id = experiment_id(MlflowClient(settings.tracking_uri, settings.registry_uri), settings, experiment)
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def traced_call(
    program_name: str,
    contributor: str,
    inputs: Mapping[str, Any],
    call: Callable[..., Any],
    *,
    experiment_id: str | None = None,
    start_time_ns: int | None = None,
    output_fields: tuple[str, ...] | None = None,
) -> tuple[str, dict[str, Any]]:
    """Run ``call(**inputs)`` inside a root span that carries the contract tags.

    ``start_time_ns`` back-dates the trace (backfills, demo seeding). Returns the trace id and the
    outputs logged on the root span.
    """
    start = start_time_ns or time.time_ns()
    root = mlflow.start_span_no_context(
        name=program_name,
        span_type="CHAIN",
        inputs=dict(inputs),
        tags={PROGRAM_TAG: program_name, CONTRIBUTOR_TAG: contributor},
        experiment_id=experiment_id,
        start_time_ns=start,
    )
    began = time.perf_counter_ns()
    try:
        with safe_set_span_in_context(root):
            prediction = call(**inputs)
    except Exception as exc:
        root.record_exception(exc)
        root.end(end_time_ns=start + (time.perf_counter_ns() - began))
        raise
    outputs = _outputs(prediction, output_fields)
    root.end(outputs=outputs, end_time_ns=start + (time.perf_counter_ns() - began))
    return root.trace_id, outputs


def _outputs(prediction: Any, fields: tuple[str, ...] | None) -> dict[str, Any]:
    if isinstance(prediction, Mapping):
        data = dict(prediction)
    elif hasattr(prediction, "toDict"):
        data = prediction.toDict()
    else:
        data = {"output": prediction}
    return {k: v for k, v in data.items() if fields is None or k in fields}


def label_trace(
    trace_id: str,
    contributor: str,
    feedback: Mapping[str, float | int | bool] | None = None,
    expectations: Mapping[str, Any] | None = None,
) -> None:
    """Attach outcomes (feedback) and ground truth (expectations) to a finished trace.

    Works right after :func:`traced_call` under MLflow's default asynchronous trace export: a
    trace still in the export queue is flushed to the store first. The flush costs about a second
    (MLflow's exporter polls its queue), so it runs only when the trace is not found.
    """
    source = AssessmentSource(source_type=AssessmentSourceType.HUMAN, source_id=contributor)
    for name, value in (feedback or {}).items():
        _once_stored(lambda name=name, value=value: mlflow.log_feedback(trace_id=trace_id, name=name, value=value, source=source))
    for name, value in (expectations or {}).items():
        _once_stored(lambda name=name, value=value: mlflow.log_expectation(trace_id=trace_id, name=name, value=value, source=source))


def _once_stored(log: Callable[[], object]) -> None:
    """Run ``log``; if its trace is not in the store yet, drain the export queue and run it again
    (an unknown trace id still fails, with MLflow's own error)."""
    try:
        log()
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        mlflow.flush_trace_async_logging()
        log()
