"""Synthetic prospect traffic for ``outreach_reply`` and the outcomes the replies earn.

Reps receive a draft from the program and edit it before sending; the trace records the reply that
was sent (that is what the prospect reacted to). Sent replies come from a pool of styles of uneven
quality. Prospects answer more often when a reply names their company, asks them a question and
stays short; the pipeline is never told this rule, it has to learn it from outcomes.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from teleprompt_assets.samples.ticket_traffic import CONTRIBUTORS, Contributor

COMPANIES = ("Acme Logistics", "Globex Retail", "Initech Health", "Umbrella Foods", "Hooli Cloud", "Stark Energy", "Wayne Media", "Soylent Labs")
NEEDS = ("inventory tracking", "customer support automation", "billing reconciliation", "fleet scheduling", "contract review")
MESSAGES = (
    "Hi, we are looking at tools for {need}. Can you tell me more?",
    "Our team struggles with {need} and a colleague recommended you.",
    "Do you have pricing for {need} for a mid-sized team?",
    "We tried another vendor for {need} and it did not work out.",
)
STYLES = (
    "Thanks for reaching out! Happy to help {company} with {need}. Would a 20-minute call on Thursday work for you?",
    "Hi! Great to hear from {company}. What is the biggest problem you face with {need} today?",
    "Thank you for your message. Our platform covers many use cases across industries, including {need}, and we have worked with "
    "hundreds of customers of every size. Our team offers onboarding, training, integrations, dedicated support, flexible pricing "
    "tiers and a long list of features that we would be glad to walk you through in detail whenever it suits you.",
    "Thanks for your interest. Please find our brochure attached.",
    "Hello, we can help with {need}. Let me know.",
)


@dataclass(frozen=True)
class Prospect:
    prospect_message: str
    company: str
    need: str
    contributor: Contributor


def prospects(count: int, rng: random.Random) -> Iterator[Prospect]:
    weights = [c.share for c in CONTRIBUTORS]
    for _ in range(count):
        need = rng.choice(NEEDS)
        company = rng.choice(COMPANIES)
        yield Prospect(rng.choice(MESSAGES).format(need=need), company, need, rng.choices(CONTRIBUTORS, weights)[0])


def sent_reply(prospect: Prospect, rng: random.Random) -> str:
    return rng.choice(STYLES).format(company=prospect.company, need=prospect.need)


def reply_probability(reply: str, company: str) -> float:
    """The hidden rule prospects follow (never given to the pipeline)."""
    words = len(reply.split())
    p = 0.08 + 0.32 * (company in reply) + 0.3 * ("?" in reply) + 0.2 * (words <= 40) - 0.05 * (words > 60)
    return min(0.95, max(0.02, p))


def outcomes(reply: str, company: str, rng: random.Random) -> dict[str, float | bool]:
    p = reply_probability(reply, company)
    replied = rng.random() < p
    engagement = round(min(1.0, max(0.0, rng.gauss(0.65 if replied else 0.15, 0.1) + 0.2 * (p - 0.5))), 2)
    return {"reply_rate": replied, "engagement": engagement}
