"""Automation settings and alerts: the pure core (no Dagster), used by ``defs/automation.py`` and ``defs/alerting.py``.

* ``AutomationConfig`` is the ``automation:`` section of ``teleprompt.yaml`` (docs/operations.md).
* ``Alert`` is one message; ``send`` posts it to a Slack-compatible webhook with bounded retries.
  Webhook URLs carry their secret in the path, so errors and logs name only scheme and host.
* The anomaly rules are pure functions from figures to an ``Alert`` or ``None``.
"""

from __future__ import annotations

import json
import math
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from teleprompt_assets.core.config import WEBHOOK_ENV, AlertsConfig
from teleprompt_assets.core.outcomes import outcome_value
from teleprompt_assets.core.urls import redact_url

Severity = Literal["info", "warning", "error"]


class AlertDeliveryError(RuntimeError):
    """A webhook did not accept an alert. The message names the webhook by scheme and host only."""


# --- configuration -------------------------------------------------------------------------------


def webhook_url(config: AlertsConfig, override: str | None = None) -> str | None:
    """An explicit override, else ``TELEPROMPT_ALERT_WEBHOOK``, else the config file's ``webhook_url``."""
    return override or os.environ.get(WEBHOOK_ENV) or config.webhook_url


# --- alerts and delivery -------------------------------------------------------------------------


@dataclass(frozen=True)
class Alert:
    kind: str  # run_failure | quarantine_rate | outcome_drift | lm_error_rate | deltaone
    title: str
    text: str
    severity: Severity = "warning"
    fields: Mapping[str, Any] = field(default_factory=dict)
    link: str | None = None

    def line(self) -> str:
        """One line for a log."""
        extra = ", ".join(f"{k}={v}" for k, v in self.fields.items())
        return f"[{self.severity}] {self.title}: {self.text}" + (f" ({extra})" if extra else "") + (f" {self.link}" if self.link else "")


_ICONS = {"info": ":large_green_circle:", "warning": ":warning:", "error": ":red_circle:"}


def payload(alert: Alert) -> dict:
    """Slack-compatible JSON: ``text`` (the fallback every client shows) and Block Kit ``blocks``."""
    blocks: list[dict] = [
        {"type": "header", "text": {"type": "plain_text", "text": alert.title[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"{_ICONS[alert.severity]} {alert.text}"[:3000]}},
    ]
    if alert.fields:
        blocks.append({"type": "section", "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{v}"[:2000]} for k, v in list(alert.fields.items())[:10]]})
    if alert.link:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"<{alert.link}|details>"}]})
    return {"text": f"{alert.title}: {alert.text}"[:3000], "blocks": blocks}


def _scrub(message: str, url: str) -> str:
    parts = urlsplit(url)
    for secret in (url, parts.path, parts.query):
        if secret and secret not in ("/",):
            message = message.replace(secret, "/…")
    return message


RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}


def send(alert: Alert, webhook_url: str, timeout: float = 5.0, retries: int = 2, backoff_s: float = 0.5,
         sleep: Callable[[float], None] = time.sleep) -> int:
    """POST the alert as JSON; returns the attempts it took. Retries 5xx, 408/425/429 and network errors
    with exponential backoff (a ``Retry-After`` header is honoured up to 30 s); other 4xx fail at once.
    Raises ``AlertDeliveryError`` naming only the webhook's scheme and host."""
    if urlsplit(webhook_url).scheme not in ("http", "https"):
        raise AlertDeliveryError(f"webhook URL must be http(s), got scheme '{urlsplit(webhook_url).scheme}'")
    body = json.dumps(payload(alert)).encode()
    attempts = retries + 1
    last = ""
    for attempt in range(1, attempts + 1):
        request = urllib.request.Request(webhook_url, data=body, method="POST", headers={"Content-Type": "application/json", "User-Agent": "teleprompt-assets"})
        wait = backoff_s * 2 ** (attempt - 1)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - scheme checked above
                response.read()
                return attempt
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code} {exc.reason}"
            retry_after = exc.headers.get("Retry-After") if exc.headers else None
            if retry_after and retry_after.isdigit():
                wait = min(float(retry_after), 30.0)
            if exc.code not in RETRY_STATUS:
                attempts = attempt
                break
        except TimeoutError:
            last = f"no answer within {timeout:g} s"
        except urllib.error.URLError as exc:
            reason = exc.reason
            last = f"{type(reason).__name__}: {reason}" if isinstance(reason, BaseException) else str(reason)
        except OSError as exc:
            last = f"{type(exc).__name__}: {exc}"
        if attempt < attempts:
            sleep(wait)
    raise AlertDeliveryError(f"alert '{alert.title}' not delivered to webhook {redact_url(webhook_url)} after {attempts} attempt(s): "
                             f"{_scrub(last, webhook_url)}")


# --- anomaly rules (pure) ------------------------------------------------------------------------


def quarantine_rate_alert(program: str, day: str, rate: float, read: int | None, threshold: float | None, min_traces: int) -> Alert | None:
    """A day's quarantine rate above ``threshold``; days with fewer than ``min_traces`` read are ignored
    (``read=None``: unknown, checked anyway)."""
    if threshold is None or rate is None or math.isnan(rate) or rate <= threshold:
        return None
    if read is not None and read < min_traces:
        return None
    return Alert("quarantine_rate", f"Quarantine spike: {program} {day}",
                 f"{rate:.1%} of the day's traces broke the trace contract (threshold {threshold:.1%}). "
                 "See the quarantined_traces asset's `reasons` metadata.",
                 "warning", {"program": program, "day": day, "quarantine_rate": round(rate, 4), "traces_read": "?" if read is None else read})


def outcome_stats(feedback_rows: Iterable[str | Mapping | None]) -> dict[str, tuple[float, int]]:
    """(sum, count) per outcome name over traces' feedback (JSON text or mappings)."""
    stats: dict[str, tuple[float, int]] = {}
    for row in feedback_rows:
        values = json.loads(row) if isinstance(row, str) else (row or {})
        if not isinstance(values, Mapping):
            continue
        for name, raw in values.items():
            number = outcome_value(raw)
            if number is not None:
                total, n = stats.get(name, (0.0, 0))
                stats[name] = (total + number, n + 1)
    return stats


def outcome_drift_alerts(program: str, day: str, day_stats: Mapping[str, tuple[float, int]], window_stats: Mapping[str, tuple[float, int]],
                         threshold: float | None, min_traces: int) -> list[Alert]:
    """Outcome drift: for each outcome, the day's mean against the mean over the window's *other* days.
    Fires when ``|day_mean - window_mean| > threshold`` and both sides have at least ``min_traces`` values."""
    if threshold is None:
        return []
    alerts = []
    for name in sorted(day_stats):
        (day_sum, day_n), (win_sum, win_n) = day_stats[name], window_stats.get(name, (0.0, 0))
        if day_n < min_traces or win_n < min_traces:
            continue
        day_mean, win_mean = day_sum / day_n, win_sum / win_n
        if abs(day_mean - win_mean) > threshold:
            direction = "fell" if day_mean < win_mean else "rose"
            alerts.append(Alert("outcome_drift", f"Outcome drift: {program} {day} {name}",
                                f"mean `{name}` {direction} to {day_mean:.3f} from {win_mean:.3f} over the window (threshold ±{threshold:g}).",
                                "warning", {"program": program, "day": day, "outcome": name, "day_mean": round(day_mean, 4), "day_n": day_n,
                                            "window_mean": round(win_mean, 4), "window_n": win_n}))
    return alerts


def lm_error_rate_alert(program: str, day: str, errors: int | None, calls: int | None, threshold: float | None) -> Alert | None:
    """LM errors per call during a compile above ``threshold``; silent when the figures are missing."""
    if threshold is None or errors is None or not calls:
        return None
    rate = errors / calls
    if rate <= threshold:
        return None
    return Alert("lm_error_rate", f"LM errors: {program} {day}", f"{errors} of {calls} LM calls failed ({rate:.1%}, threshold {threshold:.1%}).",
                 "warning", {"program": program, "day": day, "lm_errors": errors, "lm_calls": calls})


def deltaone_alert(program: str, day: str, uid: str | None, figures: Mapping[str, Any], link: str | None = None) -> Alert:
    shown = {k: figures[k] for k in ("delta_ppm", "ci_low_ppm", "baseline_score", "candidate_score", "holdout") if figures.get(k) is not None}
    return Alert("deltaone", f"DeltaOne attested: {program} {day}",
                 f"The candidate beat the baseline with significance; attestation `{uid}` was signed.", "info",
                 {"program": program, "day": day, **shown}, link)


def run_failure_alert(job: str, run_id: str, partition: str | None, error: str, link: str | None = None) -> Alert:
    text = " ".join(error.split())
    return Alert("run_failure", f"Run failed: {job}" + (f" {partition}" if partition else ""),
                 text[:500] + ("…" if len(text) > 500 else ""), "error",
                 {"job": job, "run_id": run_id, **({"partition": partition} if partition else {})}, link)
