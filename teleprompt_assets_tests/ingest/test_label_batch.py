"""label_traces: a burst of calls labelled together, under MLflow's default asynchronous export."""

import mlflow
from mlflow import MlflowClient

from teleprompt_assets.core import identity
from teleprompt_assets.core.lm import offline_lm
from teleprompt_assets.core.settings import load_settings
from teleprompt_assets.ingest.tracing import Label, connect_app, label_traces, traced_call
from teleprompt_assets.samples.ticket_router import TicketRouter
from teleprompt_assets.samples.ticket_traffic import contributor_address


def test_a_burst_of_calls_is_labelled_with_one_drain_of_the_export_queue(tp_home, monkeypatch):
    monkeypatch.delenv("MLFLOW_ENABLE_ASYNC_TRACE_LOGGING", raising=False)  # MLflow's default: export in the background
    experiment = connect_app("teleprompt-production")
    program, who = TicketRouter(), contributor_address("acme-support")
    import dspy

    with dspy.context(lm=offline_lm()):
        ids = [traced_call("ticket_router", who, {"message": f"My parcel {i} never arrived"}, lambda message: program(message=message))[0] for i in range(8)]
    drains = []
    flush = mlflow.flush_trace_async_logging
    monkeypatch.setattr(mlflow, "flush_trace_async_logging", lambda *a, **k: drains.append(1) or flush(*a, **k))
    written = label_traces([Label(i, who, {"resolved_first_touch": True}, {"queue": "shipping"}) for i in ids])
    assert written == 16 and len(drains) == 1
    settings = load_settings()
    traces = MlflowClient(settings.tracking_uri).search_traces(locations=[experiment], max_results=50)
    labelled = {t.info.trace_id: {a.name for a in t.info.assessments} for t in traces}
    assert all(labelled[i] == {"resolved_first_touch", "queue"} for i in ids)
    assert all(identity.LABEL_SIGNATURE in (a.metadata or {}) for t in traces for a in t.info.assessments)  # each label signed, as label_trace signs
