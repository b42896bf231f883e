"""The trace contract (docs/architecture.md#trace-contract): how a production app logs a labeled call so we can learn from it.

Apps call :func:`connect_app` once, :func:`traced_call` around their DSPy program (with
``mlflow.dspy.autolog()`` on, the program's own spans nest under the root span) and later
:func:`label_trace` when outcomes arrive; README.md's example is run verbatim by the tests.
Everything the pipeline reads is defined here, so the reader and the writer cannot drift apart.

The app vouches for what it logs (docs/security.md#identity): :func:`traced_call` signs the trace's
contract fields with the app key and :func:`label_trace` signs each label with the labeller key
(``core/identity.py``: from the environment or a keystore, the public DEMO key when neither is set).
Curation believes those signatures, not the tags, which any tracking-store writer can change.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import AssessmentSource, AssessmentSourceType
from mlflow.exceptions import MlflowException
from mlflow.tracing.provider import safe_set_span_in_context
from mlflow.tracing.utils import dump_span_attribute_value

from teleprompt_assets.core import identity
from teleprompt_assets.core.config import DEFAULT_EXPERIMENT
from teleprompt_assets.core.settings import load_settings
from teleprompt_assets.core.tracking import experiment_id

PROGRAM_TAG = "teleprompt.program"
CONTRIBUTOR_TAG = "teleprompt.contributor"
SIGNATURE_TAG = identity.SIGNATURE_TAG


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
    signer: identity.Signer | None = None,
) -> tuple[str, dict[str, Any]]:
    """Run ``call(**inputs)`` inside a root span that carries the contract tags, and sign the trace.

    ``start_time_ns`` back-dates the trace (backfills, demo seeding): the app vouches for the time it
    sets, so only the key holder can back-date. ``signer`` defaults to :func:`identity.app_signer`,
    loaded before the call so a bad key fails here and not after the work. A call that raises is
    not signed (curation quarantines it as ``trace_error`` anyway). Returns the trace id and the
    outputs logged on the root span.
    """
    key = signer or identity.app_signer()
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
    claim = identity.TraceClaim(root.trace_id, program_name, contributor, start // 1_000_000, _stored_hash(dict(inputs)), _stored_hash(outputs))
    with safe_set_span_in_context(root):
        mlflow.update_current_trace(tags={SIGNATURE_TAG: identity.claim_tag(claim, key)})
    root.end(outputs=outputs, end_time_ns=start + (time.perf_counter_ns() - began))
    return root.trace_id, outputs


def _stored_hash(value: Any) -> str:
    """The payload hash of ``value`` as MLflow stores it on the span (its JSON encoder turns objects
    into text), which is what the pipeline reads back and hashes again."""
    return identity.payload_hash(json.loads(dump_span_attribute_value(value)))


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
    *,
    signer: identity.Signer | None = None,
) -> None:
    """Attach outcomes (feedback) and ground truth (expectations) to a finished trace, each signed.

    Each label is signed with ``signer`` (default :func:`identity.labeller_signer`: the labeller key,
    else the app's) over the trace id, its kind, name, value and the time now; the signature rides in
    the assessment's metadata. Curation counts only labels signed by the configured labellers, the
    latest signed one per name winning, so a label written by anyone else changes nothing.

    Works right after :func:`traced_call` under MLflow's default asynchronous trace export: a
    trace still in the export queue is flushed to the store first. The flush costs about a second
    (MLflow's exporter polls its queue), so it runs only when the trace is not found.
    """
    key = signer or identity.labeller_signer()
    source = AssessmentSource(source_type=AssessmentSourceType.HUMAN, source_id=contributor)
    now_ms = time.time_ns() // 1_000_000
    for name, value in (feedback or {}).items():
        metadata = identity.sign_label(identity.LabelClaim(trace_id, "feedback", name, identity.label_value(value), now_ms), key)
        _once_stored(lambda name=name, value=value, metadata=metadata: mlflow.log_feedback(trace_id=trace_id, name=name, value=value, source=source, metadata=metadata))
    for name, value in (expectations or {}).items():
        metadata = identity.sign_label(identity.LabelClaim(trace_id, "expectation", name, identity.label_value(value), now_ms), key)
        _once_stored(lambda name=name, value=value, metadata=metadata: mlflow.log_expectation(trace_id=trace_id, name=name, value=value, source=source, metadata=metadata))


@dataclass(frozen=True)
class Label:
    """The outcomes and ground truth of one finished trace, for :func:`label_traces`."""

    trace_id: str
    contributor: str
    feedback: Mapping[str, float | int | bool] | None = None
    expectations: Mapping[str, Any] | None = None


def label_traces(labels: Iterable[Label], *, signer: identity.Signer | None = None) -> int:
    """:func:`label_trace` for many traces at once: MLflow's export queue is drained once for the
    batch, not once per trace that is still in it (about a second each), so labelling a burst of
    calls right after they were made costs the store's writes alone. Returns the labels written."""
    key = signer or identity.labeller_signer()
    mlflow.flush_trace_async_logging()
    written = 0
    for label in labels:
        label_trace(label.trace_id, label.contributor, label.feedback, label.expectations, signer=key)
        written += len(label.feedback or {}) + len(label.expectations or {})
    return written


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
