"""Two days of one program started at once (issue 14: the new-traces sensor's first tick did this).

Whichever run finishes last, no champion is replaced by a version that was not measured against it,
and an older window never replaces a newer one's champion."""

import os
import subprocess
import sys
from datetime import date, timedelta

import dagster as dg
import pytest
from mlflow import MlflowClient

from teleprompt_assets.core.settings import load_settings
from teleprompt_assets.core.spec import load_project
from teleprompt_assets.launch import ensure_dagster_home
from teleprompt_assets.samples.seed import seed_program
from teleprompt_assets_tests.conftest import REPO, set_env, small_window_config

pytestmark = pytest.mark.e2e  # starts servers or separate processes: `make test-e2e`

OLDER = date(2026, 8, 10)
NEWER = OLDER + timedelta(days=1)


@pytest.fixture(scope="module")
def raced(tmp_path_factory):
    home = tmp_path_factory.mktemp("race") / "tp"
    saved = set_env(home)
    os.environ["TELEPROMPT_CONFIG"] = str(small_window_config(home.parent))  # the subject is the order of promotions, not the evidence rule
    try:
        settings = load_settings()
        spec = load_project(settings.config_path)[1]["ticket_router"]
        seed_program(settings, spec, NEWER, days=4, per_day=45, seed=5)
        ensure_dagster_home(home / "dagster")
        with dg.DagsterInstance.from_config(str(home / "dagster")):
            pass  # an existing instance, as a daemon's is: two processes creating one sqlite schema at once collide
        env = dict(os.environ) | {"DAGSTER_HOME": str(home / "dagster"), "TELEPROMPT_MAX_PARALLEL_STEPS": "1"}
        command = [sys.executable, "-m", "teleprompt_assets.cli", "run", "--program", "ticket_router", "--date"]
        runs = [subprocess.Popen([*command, day.isoformat()], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for day in (NEWER, OLDER)]
        outputs = [run.communicate(timeout=600) for run in runs]
        for run, (_, err) in zip(runs, outputs):
            assert run.returncode == 0, err[-3000:]
        yield MlflowClient(settings.tracking_uri, settings.registry_uri), spec.registered_model_name
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_every_promotion_was_measured_against_the_champion_it_replaced(raced):
    client, name = raced
    versions = {int(v.version): v.tags for v in client.search_model_versions(f"name = '{name}'")}
    assert len(versions) == 2
    promoted = {v: tags for v, tags in versions.items() if tags.get("promoted_at")}
    assert promoted, versions
    for version, tags in promoted.items():
        assert int(tags["base_version"]) == int(tags.get("previous_champion", 0)), (version, tags)
        if tags.get("previous_champion"):
            replaced = versions[int(tags["previous_champion"])]
            assert tags["window"].split("..")[1] >= replaced["window"].split("..")[1]
    champion = int(client.get_model_version_by_alias(name, "champion").version)
    refused = [tags["promotion_refused"] for v, tags in versions.items() if v != champion and "promotion_refused" in tags]
    assert len(refused) == 1 and ("serves now" in refused[0] or "before the champion's" in refused[0]), versions
