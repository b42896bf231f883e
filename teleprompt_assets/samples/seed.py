"""Demo traffic: production-like labeled traces for the sample programs, back-dated into their days.

Each call runs the serving program (the registered champion, else the uncompiled program) under
``mlflow.dspy.autolog()`` through the trace contract helper, then labels it as an app would when
the outcome arrives. Deterministic for a given seed, so demos and tests are reproducible.

Every trace and label is signed as a production app's would be (``ingest/tracing.py``): with
``TELEPROMPT_APP_KEY`` (or its keystore) when set, else with the public DEMO app key, whose address
the sample ``teleprompt.yaml`` registers under ``trust.signers`` (docs/security.md#identity). Demo
traffic is expected to use the DEMO key, so seeding does not warn about it (an app does), and
:class:`SeedReport` names the signer.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import dspy
import mlflow

from teleprompt_assets.core import identity
from teleprompt_assets.core.lm import build_lm
from teleprompt_assets.core.settings import Settings
from teleprompt_assets.core.spec import ProgramSpec
from teleprompt_assets.core.tracking import connect, experiment_id
from teleprompt_assets.ingest.tracing import label_trace, traced_call
from teleprompt_assets.samples import outreach_traffic
from teleprompt_assets.samples.ticket_traffic import tickets


@dataclass(frozen=True)
class SeedReport:
    program: str
    days: list[str]
    traces: int
    labeled: int
    signer: str = identity.DEMO_APP_ADDRESS  # the app key's address the traces and labels are signed with


def day_start_ns(day: date) -> int:
    return int(datetime.combine(day, time(0), tzinfo=UTC).timestamp()) * 1_000_000_000


LogOne = Callable[[random.Random, dspy.Module, str, int, Any], bool]


def _seed(settings: Settings, spec: ProgramSpec, end: date, days: int, per_day: int, seed: int,
          program: dspy.Module | None, items: Callable[[int, random.Random], Iterable[Any]], log_one: LogOne) -> SeedReport:
    """The loop every sample shares: days ending on ``end`` (inclusive), calls spread over each day
    under ``mlflow.dspy.autolog()``; ``log_one`` logs and labels one call, returning whether it
    carried ground truth."""
    client = connect(settings)
    exp_id = experiment_id(client, settings, spec.config.experiment)
    program = program or spec.build()
    rng = random.Random(seed)
    mlflow.dspy.autolog(log_traces_from_eval=False, log_traces_from_compile=False)
    traces = labeled = 0
    dates = [end - timedelta(days=offset) for offset in reversed(range(days))]
    try:
        with dspy.context(lm=build_lm()):
            for day in dates:
                start = day_start_ns(day)
                offsets = sorted(rng.randrange(86_000 * 10**9) for _ in range(per_day))
                for offset, item in zip(offsets, items(per_day, rng)):
                    labeled += log_one(rng, program, exp_id, start + offset, item)
                    traces += 1
    finally:
        mlflow.dspy.autolog(disable=True)
    return SeedReport(spec.name, [d.isoformat() for d in dates], traces, labeled, identity.app_signer(warn=False).address)


def seed_ticket_router(settings: Settings, spec: ProgramSpec, end: date, days: int = 7, per_day: int = 40, seed: int = 0,
                       program: dspy.Module | None = None) -> SeedReport:
    """Routed tickets, labeled with the outcome and (mostly) the true queue by their contributor."""

    def log_one(rng: random.Random, program: dspy.Module, exp_id: str, start_ns: int, ticket: Any) -> bool:
        trace_id, outputs = traced_call(spec.name, ticket.contributor.address, {"message": ticket.message}, program, experiment_id=exp_id,
                                        start_time_ns=start_ns, output_fields=spec.output_fields, signer=identity.app_signer(warn=False))
        resolved = rng.random() < (0.9 if outputs.get("queue") == ticket.true_queue else 0.15)
        csat = round(min(1.0, max(0.0, rng.gauss(0.8 if resolved else 0.4, 0.1))), 2)
        expectations = {"queue": ticket.label} if ticket.label else {}
        label_trace(trace_id, ticket.contributor.address, {"resolved_first_touch": resolved, "csat": csat}, expectations,
                    signer=identity.labeller_signer(warn=False))
        return bool(expectations)

    return _seed(settings, spec, end, days, per_day, seed, program, tickets, log_one)


def seed_outreach_reply(settings: Settings, spec: ProgramSpec, end: date, days: int = 7, per_day: int = 40, seed: int = 0,
                        program: dspy.Module | None = None) -> SeedReport:
    """Prospect messages answered by the serving program's draft, edited by the rep, then sent.

    The trace's root span records the reply that was sent (what the prospect reacted to); the
    program's own draft is in the autologged child spans.
    """

    def log_one(rng: random.Random, program: dspy.Module, exp_id: str, start_ns: int, prospect: Any) -> bool:
        sent = outreach_traffic.sent_reply(prospect, rng)

        def draft_then_send(prospect_message: str, company: str) -> dict[str, str]:
            program(prospect_message=prospect_message, company=company)
            return {"reply": sent}

        trace_id, outputs = traced_call(spec.name, prospect.contributor.address,
                                        {"prospect_message": prospect.prospect_message, "company": prospect.company},
                                        draft_then_send, experiment_id=exp_id, start_time_ns=start_ns, signer=identity.app_signer(warn=False))
        label_trace(trace_id, prospect.contributor.address, outreach_traffic.outcomes(outputs["reply"], prospect.company, rng),
                    signer=identity.labeller_signer(warn=False))
        return False

    return _seed(settings, spec, end, days, per_day, seed, program, outreach_traffic.prospects, log_one)


SEEDERS = {"ticket_router": seed_ticket_router, "outreach_reply": seed_outreach_reply}


def seed_program(settings: Settings, spec: ProgramSpec, end: date, **kwargs) -> SeedReport:
    """Demo traffic for a sample program; user programs log their own production traffic."""
    if spec.name not in SEEDERS:
        raise ValueError(f"no demo traffic generator for '{spec.name}' (samples: {', '.join(SEEDERS)})")
    return SEEDERS[spec.name](settings, spec, end, **kwargs)
