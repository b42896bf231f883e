"""Synthetic customer traffic for ``ticket_router``, with contributors of uneven volume and quality.

The templates are written so that a zero-shot router (which looks for the queue's name in the
text) gets only some of them right, while a router that has seen a similar labeled message gets
most: that is the gap optimization should close. One contributor labels carelessly (a share of
its ground-truth labels are wrong) and one re-submits messages already seen (exact duplicates).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from eth_account import Account
from eth_utils import keccak

from teleprompt_assets.samples.ticket_router import QUEUES

TEMPLATES: dict[str, tuple[str, ...]] = {
    "billing": (
        "I was charged twice for my {plan} subscription this month.",
        "Can I get a refund for order {order}? I cancelled it the same day.",
        "My invoice for {month} shows the wrong amount.",
        "Question about billing on the {plan} plan, the price went up.",
    ),
    "technical": (
        "The app crashes every time I open the {feature} screen.",
        "I get error {code} when syncing my data.",
        "Technical problem: {feature} will not load on {device}.",
        "The page stays blank after the latest update on {device}.",
    ),
    "account": (
        "I cannot log in, it says my password is wrong.",
        "How do I reset the password for my {plan} account?",
        "Please change the email address on my profile to a new one.",
        "Delete my profile and all my personal data, please.",
    ),
    "shipping": (
        "My package for order {order} has not arrived yet.",
        "The tracking number for order {order} does not work.",
        "Delivery to {city} is delayed by a week, where is my parcel?",
        "Can you ship order {order} to a different address in {city}?",
    ),
    "sales": (
        "Do you offer discounts for a team of {seats} people?",
        "I would like a quote for the enterprise plan with {seats} seats.",
        "Can I talk to someone in sales about volume pricing?",
        "Is there a nonprofit or education discount?",
    ),
}

SLOTS: dict[str, tuple[str, ...]] = {
    "plan": ("Basic", "Pro", "Team", "Premium"),
    "order": ("#10482", "#22917", "#30554", "#47710", "#58203"),
    "month": ("January", "March", "June", "October"),
    "feature": ("reports", "calendar", "dashboard", "settings"),
    "code": ("E401", "E503", "SYNC-17", "0x80070005"),
    "device": ("iPhone", "Android phone", "Windows laptop", "iPad"),
    "city": ("Lisbon", "Denver", "Osaka", "Nairobi", "Berlin"),
    "seats": ("12", "40", "150", "500"),
}


@dataclass(frozen=True)
class Contributor:
    """A data contributor: its address, its share of traffic and how reliable its labels are."""

    name: str
    address: str
    share: float
    label_error_rate: float = 0.0
    duplicate_rate: float = 0.0


def contributor_address(name: str) -> str:
    """A stable, checksummed demo address derived from the name (its key is never used)."""
    return Account.from_key(keccak(text=f"teleprompt-demo-contributor:{name}")).address


CONTRIBUTORS: tuple[Contributor, ...] = (
    Contributor("acme-support", contributor_address("acme-support"), 0.35),
    Contributor("globex-helpdesk", contributor_address("globex-helpdesk"), 0.25),
    Contributor("initech-care", contributor_address("initech-care"), 0.15),
    Contributor("noisy-labeler", contributor_address("noisy-labeler"), 0.15, label_error_rate=0.4),
    Contributor("duplicate-flooder", contributor_address("duplicate-flooder"), 0.10, duplicate_rate=0.7),
)


@dataclass(frozen=True)
class Ticket:
    message: str
    true_queue: str
    label: str | None
    contributor: Contributor


def _fill(template: str, rng: random.Random) -> str:
    return template.format(**{k: rng.choice(v) for k, v in SLOTS.items()})


def tickets(count: int, rng: random.Random, label_rate: float = 0.9) -> Iterator[Ticket]:
    """``count`` tickets; ``label`` is the contributor's ground-truth claim (None when unlabeled)."""
    seen: list[tuple[str, str]] = []
    weights = [c.share for c in CONTRIBUTORS]
    for _ in range(count):
        contributor = rng.choices(CONTRIBUTORS, weights)[0]
        if seen and rng.random() < contributor.duplicate_rate:
            message, queue = rng.choice(seen)
        else:
            queue = rng.choice(QUEUES)
            message = _fill(rng.choice(TEMPLATES[queue]), rng)
            seen.append((message, queue))
        label: str | None = queue
        if rng.random() < contributor.label_error_rate:
            label = rng.choice([q for q in QUEUES if q != queue])
        if rng.random() >= label_rate:
            label = None
        yield Ticket(message, queue, label, contributor)
