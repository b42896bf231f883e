"""Synthetic support-desk traffic, as curated rows (``trace_contract.CURATED_SCHEMA``).

Emails come from a few templates per intent, so one email text reaches the desk from several
customers: the case where a predictor that sees only ``email`` meets inputs the program as a whole
tells apart. Ground truth holds the intent and the agent's reply; the outcome ``resolved`` is true
when the reply sent was the intent's right answer and named the customer.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

import polars as pl
from eth_utils import keccak

from teleprompt_assets.curate.validation import CURATED_SCHEMA

EMAILS = {
    "refund": ("I was charged twice, please refund the second payment.", "Can I get a refund for order {n}? The item broke.",
               "Please refund my subscription fee for this month."),
    "shipping": ("My parcel has not arrived yet, where is it?", "Order {n} is late, when will it be delivered?",
                 "The tracking page for my shipping says nothing new."),
    "cancel": ("Please cancel my subscription at the end of the month.", "I want to cancel order {n} before it ships.",
               "How do I cancel my account?"),
    "bug": ("The app crashes when I open settings, this looks like a bug.", "Export to PDF fails with an error since the update.",
            "Login loops back to the start page, a bug I think."),
    "pricing": ("What is the pricing for a team of 40?", "Do you offer a discount on yearly pricing?",
                "How much does the premium plan cost per seat?"),
}
REPLIES = {
    "refund": "Hi {name}, your refund is on its way and reaches your card within 5 days.",
    "shipping": "Hi {name}, your parcel left our warehouse; the tracking link follows by email today.",
    "cancel": "Hi {name}, your cancellation is confirmed and nothing more will be charged.",
    "bug": "Hi {name}, thanks for the report; our engineers reproduced the bug and a fix ships this week.",
    "pricing": "Hi {name}, our pricing sheet is attached; a team plan costs 12 dollars per seat.",
}
WEAK_REPLY = "Thank you for your email, we will get back to you."
NAMES = ("Ada Lovelace", "Grace Hopper", "Alan Turing", "Edsger Dijkstra", "Barbara Liskov", "Donald Knuth", "Frances Allen", "Ken Thompson")
CONTRIBUTORS = ("0x" + "1" * 40, "0x" + "2" * 40, "0x" + "3" * 40)
DAY_MS = 86_400_000


@dataclass(frozen=True)
class Ticket:
    email: str
    customer_name: str
    intent: str


def tickets(count: int, rng: random.Random) -> list[Ticket]:
    out = []
    for _ in range(count):
        intent = rng.choice(sorted(EMAILS))
        out.append(Ticket(rng.choice(EMAILS[intent]).format(n=rng.randrange(1000, 1030)), rng.choice(NAMES), intent))
    return out


def curated(program: str, module_inputs: tuple[str, ...], count: int, days: int, seed: int = 0, start_ms: int = 1_767_225_600_000,
            log_intent: bool = True) -> pl.DataFrame:
    """``count`` accepted traces of ``program`` spread over ``days``, with ground truth and outcomes.

    What was logged as sent is the right reply for about 60% of traces (resolved) and a generic one
    otherwise (not resolved), so an outcome-only program has good and bad replies to learn from.
    ``module_inputs`` picks the root span's inputs (``("email",)`` for the one-step programs);
    ``log_intent=False`` logs a two-step program that returns only its reply.
    """
    rng = random.Random(seed)
    rows = []
    for i, ticket in enumerate(tickets(count, rng)):
        right = REPLIES[ticket.intent].format(name=ticket.customer_name)
        good = rng.random() < 0.6
        sent = right if good else WEAK_REPLY
        inputs = {f: getattr(ticket, f) for f in module_inputs}
        intent = {"intent": ticket.intent} if log_intent else {}
        outputs = intent | ({"reply": sent} if "customer_name" in module_inputs else {})
        truth = intent | ({"reply": right} if "customer_name" in module_inputs else {})
        trace_id = f"tr-{seed}-{i:05d}"
        rows.append({"trace_id": trace_id, "timestamp_ms": start_ms + (i * days * DAY_MS) // count, "state": "OK", "experiment_id": "1",
                     "program": program, "contributor": CONTRIBUTORS[i % len(CONTRIBUTORS)], "inputs": json.dumps(inputs),
                     "outputs": json.dumps(outputs), "feedback": json.dumps({"resolved": good}), "expectations": json.dumps(truth),
                     "trace_hash": "0x" + keccak(text=trace_id).hex()})
    return pl.DataFrame(rows, schema=CURATED_SCHEMA)
