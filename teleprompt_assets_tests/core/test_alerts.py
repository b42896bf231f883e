"""The alert core: delivery to a real HTTP server on 127.0.0.1, the anomaly rules, the automation config."""

import json
import threading
import time
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from teleprompt_assets.core import alerts
from teleprompt_assets.core.alerts import Alert, AlertDeliveryError
from teleprompt_assets.core.config import WEBHOOK_ENV, AutomationConfig, ConfigError
from teleprompt_assets.core.spec import load_project
from teleprompt_assets.core.urls import redact_url

SECRET = "/services/T000/B000/XXXXsecretXXXX"


class Hook:
    """A webhook on 127.0.0.1: answers from a script of (status, headers, delay) and records each POST."""

    def __init__(self):
        self.script: list[tuple[int, dict, float]] = []
        self.received: list[dict] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hook.received.append({"path": self.path, "type": self.headers.get("Content-Type"), "json": json.loads(body)})
                status, headers, delay = hook.script.pop(0) if hook.script else (200, {}, 0.0)
                time.sleep(delay)
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:  # the client gave up (timeout test)
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_port}"
        self.url = self.base + SECRET
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def hook():
    server = Hook()
    yield server
    server.close()


ALERT = Alert("deltaone", "DeltaOne attested: ticket_router 2026-05-01", "signed", "info", {"program": "ticket_router", "delta_ppm": 12500}, "http://x/y")


def test_send_posts_slack_compatible_json(hook):
    assert alerts.send(ALERT, hook.url) == 1
    [got] = hook.received
    assert got["path"] == SECRET and got["type"] == "application/json"
    body = got["json"]
    assert body["text"].startswith("DeltaOne attested: ticket_router 2026-05-01")
    assert body["blocks"][0] == {"type": "header", "text": {"type": "plain_text", "text": ALERT.title}}
    assert {"type": "mrkdwn", "text": "*delta_ppm*\n12500"} in body["blocks"][2]["fields"]
    assert "<http://x/y|details>" in json.dumps(body["blocks"][-1])


def test_send_retries_server_errors_with_backoff(hook):
    hook.script = [(500, {}, 0), (503, {}, 0), (200, {}, 0)]
    waits = []
    assert alerts.send(ALERT, hook.url, retries=2, backoff_s=0.5, sleep=waits.append) == 3
    assert waits == [0.5, 1.0] and len(hook.received) == 3


def test_send_honours_retry_after(hook):
    hook.script = [(429, {"Retry-After": "2"}, 0)]
    waits = []
    assert alerts.send(ALERT, hook.url, sleep=waits.append) == 2
    assert waits == [2.0]


def test_client_error_fails_at_once_without_leaking_the_secret(hook):
    hook.script = [(404, {}, 0)]
    with pytest.raises(AlertDeliveryError) as err:
        alerts.send(ALERT, hook.url, retries=3, sleep=lambda s: None)
    message = str(err.value)
    assert len(hook.received) == 1
    assert hook.base in message and "HTTP 404" in message and "after 1 attempt" in message
    assert "secret" not in message and "services" not in message


def test_exhausted_retries_and_timeouts_are_reported(hook):
    hook.script = [(502, {}, 0), (502, {}, 0)]
    with pytest.raises(AlertDeliveryError, match=r"after 2 attempt\(s\): HTTP 502"):
        alerts.send(ALERT, hook.url, retries=1, sleep=lambda s: None)
    hook.script = [(200, {}, 1.0)]
    with pytest.raises(AlertDeliveryError, match="no answer within 0.2 s") as err:
        alerts.send(ALERT, hook.url, timeout=0.2, retries=0)
    assert "secret" not in str(err.value)


def test_unreachable_webhook_and_bad_scheme():
    with pytest.raises(AlertDeliveryError) as err:  # port 9 on 127.0.0.1: nothing listens (discard)
        alerts.send(ALERT, "http://127.0.0.1:9" + SECRET, retries=1, sleep=lambda s: None)
    assert "http://127.0.0.1:9" in str(err.value) and "secret" not in str(err.value)
    with pytest.raises(AlertDeliveryError, match="http"):
        alerts.send(ALERT, "file:///etc/passwd")
    assert redact_url("https://hooks.slack.com/services/T/B/secret?x=1") == "https://hooks.slack.com"


def test_quarantine_rule():
    assert alerts.quarantine_rate_alert("p", "2026-05-01", 0.1, 100, 0.2, 20) is None
    assert alerts.quarantine_rate_alert("p", "2026-05-01", 0.5, 10, 0.2, 20) is None  # too few traces
    alert = alerts.quarantine_rate_alert("p", "2026-05-01", 0.5, 100, 0.2, 20)
    assert alert.kind == "quarantine_rate" and alert.fields["quarantine_rate"] == 0.5
    assert alerts.quarantine_rate_alert("p", "d", 0.5, 100, None, 20) is None  # rule off


def test_outcome_values_and_drift_rule():
    stats = alerts.outcome_stats(['{"csat": 1, "resolved": true}', '{"csat": 0.5, "resolved": false, "queue": "x"}', None, "{}"])
    assert stats == {"csat": (1.5, 2), "resolved": (1.0, 2)}
    day = {"resolved": (5.0, 20), "csat": (18.0, 20)}
    window = {"resolved": (90.0, 100), "csat": (90.0, 100)}
    [alert] = alerts.outcome_drift_alerts("p", "2026-05-01", day, window, 0.15, 20)
    assert alert.fields["outcome"] == "resolved" and "fell to 0.250 from 0.900" in alert.text
    assert alerts.outcome_drift_alerts("p", "d", day, window, 0.15, 21) == []  # too few on the day
    assert alerts.outcome_drift_alerts("p", "d", day, window, None, 1) == []


def test_lm_error_rule():
    assert alerts.lm_error_rate_alert("p", "d", None, 100, 0.05) is None
    assert alerts.lm_error_rate_alert("p", "d", 5, 100, 0.05) is None
    assert alerts.lm_error_rate_alert("p", "d", 6, 100, 0.05).fields["lm_errors"] == 6


def test_run_failure_alert_is_bounded():
    alert = alerts.run_failure_alert("optimize_program", "abc", "2026-05-01|p", "boom\n" * 300)
    assert alert.severity == "error" and len(alert.text) <= 501 and alert.fields["partition"] == "2026-05-01|p"


def test_automation_config(tmp_path, monkeypatch):
    path = tmp_path / "teleprompt.yaml"
    path.write_text("programs: {}\n")
    assert load_project(path)[0].automation == AutomationConfig()  # no section: defaults
    path.write_text("programs: {}\nautomation:\n  cycle: weekly\n  week_ends_on: saturday\n  hour: 3\n  sensor: {min_new_traces: 10}\n"
                    "  alerts: {webhook_url: 'https://hooks.example.com/a/b', quarantine_rate_max: 0.3}\n")
    config = load_project(path)[0].automation
    assert (config.cron, config.schedule_name, config.sensor.min_new_traces, config.alerts.quarantine_rate_max) == ("0 3 * * 0", "weekly_optimization", 10, 0.3)
    assert config.period(date(2026, 5, 2)) == [date(2026, 4, 26 + i) for i in range(5)] + [date(2026, 5, 1), date(2026, 5, 2)]
    monthly = AutomationConfig(cycle="monthly")
    assert monthly.cron == "0 1 1 * *" and len(monthly.period(date(2026, 2, 28))) == 28
    assert AutomationConfig(cycle="weekly").cron == "0 1 * * 1"  # week ends Sunday: runs Monday
    monkeypatch.delenv(WEBHOOK_ENV, raising=False)
    assert alerts.webhook_url(config.alerts) == "https://hooks.example.com/a/b"
    monkeypatch.setenv(WEBHOOK_ENV, "https://hooks.example.com/env")
    assert alerts.webhook_url(config.alerts) == "https://hooks.example.com/env"
    path.write_text("automation:\n  cycle: hourly\n  alerts: {webhook_url: 'ftp://x'}\n")
    with pytest.raises(ConfigError, match=r"automation\.cycle"):
        load_project(path)
