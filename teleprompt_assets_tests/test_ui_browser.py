"""What people see (issue 18): after a small pipeline run, the Dagster UI and the MLflow UI, opened in
a real browser, show the run's figures and link to each other.

One ``ticket_router`` run (the reliability suite's seeded store) into a temp TELEPROMPT_HOME, then
``dagster-webserver`` on that Dagster instance and ``mlflow server`` on that store, both on
127.0.0.1 at free ports (the run's links point there: ``TELEPROMPT_*_UI_URL``). Playwright drives
Debian's Chromium (``scripts/chromium.sh install``; `.ci/run` installs it, never ``playwright
install``). Without Chromium the tests skip, except when ``CI`` is set: there they fail.

Each test saves a full-page screenshot into its own temp folder and prints the path (``pytest -s``).
What a page must show is a list of texts and links per page (``*_texts``, ``*_links``): add to them
as the metadata grows.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from teleprompt_assets_tests.conftest import REPO
from teleprompt_assets_tests.reliability import END, MODEL, PROGRAM, environment, fresh_store, pipeline_env, run_job, scratch_root, single
from teleprompt_assets_tests.servers import free_port, start_group, stop_group, unavailable
from teleprompt_assets_tests.test_ui import dagster_location_loaded, http_get, wait_until

pytestmark = pytest.mark.browser

CHROMIUM = Path(os.environ.get("TELEPROMPT_CHROMIUM") or "/usr/bin/chromium")
START_TIMEOUT_S = 180
PAGE_TIMEOUT_MS = 30_000
PARTITION = f"{END.isoformat()}|{PROGRAM}"
# a Dagster instance that shows no first-visit dialog over the pages and sends no telemetry
DAGSTER_YAML = "nux:\n  enabled: false\ntelemetry:\n  enabled: false\n"


@dataclass(frozen=True)
class Uis:
    dagster: str
    mlflow: str
    run_id: str
    version: int
    evaluation: dict  # evaluation_report's materialization metadata for PARTITION, as stored
    registered: dict  # registered_version's


def _latest_metadata(instance: dg.DagsterInstance, asset: str) -> dict:
    [record] = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[PARTITION]), limit=1).records
    return {key: value.value for key, value in record.asset_materialization.metadata.items()}


@pytest.fixture(scope="module")
def chromium() -> Path:
    if not CHROMIUM.exists():
        unavailable(f"{CHROMIUM} is missing: the browser test drives Debian's Chromium (scripts/chromium.sh install)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as error:
        unavailable(f"Playwright is not installed ({error}): `make install` installs the dev dependencies")
    return CHROMIUM


@pytest.fixture(scope="module")
def uis(chromium: Path) -> Iterator[Uis]:
    started = time.monotonic()
    dest = Path(tempfile.mkdtemp(prefix="tp-browser-", dir=scratch_root()))
    servers: list[subprocess.Popen] = []
    try:
        home = fresh_store(dest)
        dagster_home = dest / "dagster"
        (dagster_home / "dagster.yaml").write_text(DAGSTER_YAML)
        dagster_port, mlflow_port = free_port(), free_port()
        dagster_url, mlflow_url = f"http://127.0.0.1:{dagster_port}", f"http://127.0.0.1:{mlflow_port}"
        env = pipeline_env(home) | {"DAGSTER_HOME": str(dagster_home), "TELEPROMPT_DAGSTER_UI_URL": dagster_url, "TELEPROMPT_MLFLOW_UI_URL": mlflow_url}
        bin_dir = Path(sys.executable).parent
        server_env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")} | env
        with environment(env):
            with dg.DagsterInstance.get() as instance:  # creates the instance's storage before the webserver opens it
                # both servers import while the pipeline runs (the other core); neither writes what the run writes
                servers.append(start_group([str(bin_dir / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}", "--host", "127.0.0.1",
                                       "--port", str(mlflow_port), "--workers", "1"], server_env | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
                                      dest, dest / "mlflow-server.log"))
                servers.append(start_group([str(bin_dir / "dagster-webserver"), "-w", str(REPO / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(dagster_port)],
                                      server_env, dest, dest / "dagster-webserver.log"))
                result = run_job(instance)
                assert result.success, "the pipeline run failed"
                version = single(result.output_for_node("registered_version"))["version"]
                evaluation, registered = _latest_metadata(instance, "evaluation_report"), _latest_metadata(instance, "registered_version")
        ran = time.monotonic() - started
        for proc, name, ready in ((servers[0], "mlflow server", lambda: http_get(f"{mlflow_url}/health") is not None),
                                  (servers[1], "dagster-webserver", lambda: dagster_location_loaded(dagster_url))):
            log = Path(dest / ("mlflow-server.log" if name.startswith("mlflow") else "dagster-webserver.log"))
            wait_until(ready, lambda proc=proc: None if proc.poll() is None else f"exited with {proc.returncode}", name, lambda log=log: log.read_text(errors="replace"),
                       START_TIMEOUT_S)
        print(f"\nbrowser test setup: pipeline run in {ran:.1f} s, both UIs up after {time.monotonic() - started:.1f} s")
        yield Uis(dagster_url, mlflow_url, result.run_id, int(version), evaluation, registered)
    finally:
        for proc in servers:
            stop_group(proc)
        shutil.rmtree(dest, ignore_errors=True)


@pytest.fixture(scope="module")
def browser(chromium: Path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser):
    # tall: both UIs scroll inside their own panes, which a full-page screenshot does not unroll
    context = browser.new_context(viewport={"width": 1440, "height": 2200})
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


def _screenshot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"\nscreenshot: {path}")
    return path


def _shows(page, texts: list[str], links: list[str]) -> None:
    """Every text and every link (an anchor to exactly that address) is visible on the page; Playwright
    waits for the single-page apps to render them (up to PAGE_TIMEOUT_MS each)."""
    from playwright.sync_api import expect

    for text in texts:
        expect(page.get_by_text(text).filter(visible=True).first, f"text {text!r}").to_be_visible()
    for href in links:
        expect(page.locator(f'a[href="{href}"]').filter(visible=True).first, f"link to {href}").to_be_visible()


def test_dagster_asset_page_links_the_mlflow_model_version(uis: Uis, page, tmp_path: Path):
    model_version_url = uis.registered["mlflow"]
    assert model_version_url == f"{uis.mlflow}/#/models/{MODEL}/versions/{uis.version}"
    asset_texts = ["registered_version", "Latest materialization", PARTITION, MODEL, model_version_url]
    asset_links = [model_version_url, uis.registered["mlflow_run"]]
    page.goto(f"{uis.dagster}/assets/registered_version")
    _shows(page, asset_texts, asset_links)
    _screenshot(page, tmp_path, "dagster-registered_version")


def test_dagster_partition_shows_the_programs_figures_and_history(uis: Uis, page, tmp_path: Path):
    figures = uis.evaluation
    assert figures["deltaone"] is True and figures["delta_ppm"] > 0  # the seeded store makes a real gain
    partition_texts = [
        PARTITION, "Materialized", uis.run_id[:8],
        str(figures["baseline_score"]), str(figures["candidate_score"]), str(figures["delta_ppm"]), str(figures["ci_low_ppm"]),
        # the program's history (the `summary` table): one row per evaluated day
        END.isoformat(), f"{figures['baseline_score']:.3f}", f"{figures['candidate_score']:.3f}",
    ]
    partition_links = [figures["mlflow_run"], figures["production_traces"]]
    page.goto(f"{uis.dagster}/assets/evaluation_report?view=partitions&partition={PARTITION.replace('|', '%7C')}")
    _shows(page, partition_texts, partition_links)
    _screenshot(page, tmp_path, "dagster-evaluation_report-partition")


def test_mlflow_model_version_shows_the_figures_and_links_back_to_dagster(uis: Uis, page, tmp_path: Path):
    figures = uis.evaluation
    version_texts = [MODEL, f"Version {uis.version}", "champion", str(figures["delta_ppm"]),
                     f"{figures['candidate_score']:.4f}", f"{figures['baseline_score']:.4f}"]  # the description's held-out scores
    version_links = [f"{uis.dagster}/runs/{uis.run_id}"]
    page.goto(uis.registered["mlflow"])  # the link the Dagster page shows
    _shows(page, version_texts, version_links)
    _screenshot(page, tmp_path, "mlflow-model-version")
    page.goto(page.locator(f'a[href="{uis.dagster}/runs/{uis.run_id}"]').first.get_attribute("href"))  # back to the run that made the version
    _shows(page, [uis.run_id[:8], "Success"], [])
    _screenshot(page, tmp_path, "dagster-run")
