"""The trace contract as an app uses it (issue 14, item 3).

The README's example is run as written, in a fresh interpreter with MLflow's defaults (asynchronous
trace export on), so the documentation and the helper cannot drift apart: what a user copies is
what is tested, and the traces it writes are read back the way the pipeline reads them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from mlflow import MlflowClient

from teleprompt_assets.core.spec import load_project
from teleprompt_assets.curate import validation
from teleprompt_assets.ingest import traces
from teleprompt_assets.ingest.tracing import CONTRIBUTOR_TAG, PROGRAM_TAG

pytestmark = pytest.mark.e2e  # starts servers or separate processes: `make test-e2e`

REPO = Path(__file__).resolve().parents[2]
CONTRACT_HEADING = "## The trace contract (how your app logs)"


def readme_section(heading: str) -> str:
    text = (REPO / "README.md").read_text()
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start:end if end >= 0 else None]


def readme_python(heading: str) -> str:
    """The first ``python`` block of a README section, verbatim."""
    found = re.search(r"```python\n(.*?)```", readme_section(heading), re.S)
    assert found, f"no python block under {heading!r}"
    return found.group(1)


def app_env(home: Path) -> dict[str, str]:
    """An app's environment: the store named as the README says, nothing of MLflow's set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TELEPROMPT_", "DAGSTER_"))}
    env["TELEPROMPT_HOME"] = str(home)
    env["PYTHONWARNINGS"] = "ignore"
    return env


# The block runs as written; afterwards the app process proves MLflow's default stayed on.
AFTER = "\nimport os as _os\nassert 'MLFLOW_ENABLE_ASYNC_TRACE_LOGGING' not in _os.environ, 'the example switched async export off'\n"


@pytest.fixture(scope="module")
def app_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    work = tmp_path_factory.mktemp("app")
    home = work / ".teleprompt"
    started = time.time()
    done = subprocess.run([sys.executable, "-c", readme_python(CONTRACT_HEADING) + AFTER], cwd=work, env=app_env(home),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return home, started


def test_the_readme_example_logs_labeled_traces_with_mlflow_defaults(app_run):
    home, started = app_run
    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("teleprompt-production")
    assert experiment is not None
    assert Path(experiment.artifact_location.removeprefix("file://")).is_relative_to(home / "artifacts")
    assert not (home.parent / "mlruns").exists()
    found = client.search_traces(locations=[experiment.experiment_id], max_results=10)
    assert len(found) == 2
    for trace in found:
        assert trace.info.tags[PROGRAM_TAG] == "ticket_router"
        assert trace.info.tags[CONTRIBUTOR_TAG] == "0xA2DFbbE547B9fe2Eb36D63B62AE89F1b950f0dD8"
        labels = {(a.name, a.value) for a in trace.info.assessments}
        assert {("resolved_first_touch", True), ("csat", 0.8), ("queue", "billing")} <= labels, labels
    live, backdated = sorted(found, key=lambda t: -t.info.timestamp_ms)
    assert live.info.timestamp_ms >= started * 1000 - 1000
    assert backdated.info.timestamp_ms == int(datetime(2026, 3, 2, 14, 30, tzinfo=UTC).timestamp() * 1000)


def test_the_readme_example_passes_the_pipelines_contract_check(app_run):
    home, _ = app_run
    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    exp_id = client.get_experiment_by_name("teleprompt-production").experiment_id
    raw = traces.read_window(client, exp_id, 0, int(time.time() * 1000) + 1, processes=1)
    project, specs = load_project(REPO / "teleprompt.yaml")
    accepted, quarantined = validation.validate(raw, specs["ticket_router"], now_ms=int(time.time() * 1000), trust=project.trust.policy("ticket_router"))
    assert quarantined.height == 0, quarantined.select("reason", "detail").to_dicts()
    assert accepted.height == 2 and raw["claim"].is_not_null().all()  # signed by the app (here the DEMO key the sample config trusts)


def test_labeling_an_unknown_trace_still_fails(tp_home):
    from mlflow.exceptions import MlflowException

    from teleprompt_assets.ingest.tracing import connect_app, label_trace

    connect_app()
    with pytest.raises(MlflowException, match="not found"):
        label_trace("tr-0123456789abcdef0123456789abcdef", "0xA2DFbbE547B9fe2Eb36D63B62AE89F1b950f0dD8", {"csat": 0.5})
