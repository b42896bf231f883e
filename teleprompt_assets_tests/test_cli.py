"""``teleprompt`` as people run it: its own process, inputs typed by hand (issue 14, items 6 and 7).

Every wrong input is one line on stderr that names the input and the fix, exit status 2, no
traceback and no Dagster run. ``teleprompt run`` prints progress and a summary, not the libraries'
chatter, unless ``--verbose``.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import pytest
import yaml

from teleprompt_assets_tests.conftest import REPO
from teleprompt_assets_tests.register.test_registry import reg  # noqa: F401 - fixture

TELEPROMPT = str(Path(sys.executable).with_name("teleprompt"))
ADDRESS = "0xA2DFbbE547B9fe2Eb36D63B62AE89F1b950f0dD8"
TODAY = datetime.now(UTC).date()
YESTERDAY = TODAY - timedelta(days=1)


class Case(NamedTuple):
    args: list[str]
    names: list[str]          # what the line must mention: the input, and the way out
    config: str = "shipped"   # which teleprompt.yaml: see ``configs``
    env: dict[str, str] = {}
    code: int = 2


def configs(folder: Path) -> dict[str, Path]:
    shipped = yaml.safe_load((REPO / "teleprompt.yaml").read_text())
    one = shipped | {"programs": {"support_router": shipped["programs"]["ticket_router"]}}
    broken = shipped | {"programs": {"ticket_router": shipped["programs"]["ticket_router"] | {"module": "teleprompt_assets.samples.ticket_router:Nope"}}}
    paths = {"shipped": REPO / "teleprompt.yaml", "missing": folder / "missing.yaml", "folder": folder,
             "yaml": folder / "bad.yaml", "one": folder / "one.yaml", "entry": folder / "entry.yaml"}
    paths["yaml"].write_text("programs:\n  ticket_router: [\n")
    paths["one"].write_text(yaml.safe_dump(one))
    paths["entry"].write_text(yaml.safe_dump(broken))
    return paths


CASES = {
    # the config file and its entries
    "status, no config file": Case(["status"], ["missing.yaml", "TELEPROMPT_CONFIG"], config="missing"),
    "run, config is a folder": Case(["run"], ["TELEPROMPT_CONFIG"], config="folder"),
    "run, config not YAML": Case(["run"], ["bad.yaml", "line 3", "TELEPROMPT_CONFIG"], config="yaml"),
    "status, bad entry": Case(["status"], ["entry.yaml", "programs.ticket_router.module", "Nope"], config="entry"),
    "seed, bad entry": Case(["seed", "--program", "ticket_router"], ["programs.ticket_router.module"], config="entry"),
    # programs
    "run, unknown program": Case(["run", "--program", "nope"], ["--program nope", "outreach_reply, ticket_router"]),
    "seed, unknown program": Case(["seed", "--program", "nope"], ["--program nope", "outreach_reply, ticket_router"]),
    "seed, several samples": Case(["seed"], ["--program is required", "outreach_reply, ticket_router"]),
    "seed, a program without demo traffic": Case(["seed", "--program", "support_router"], ["--program support_router", "demo traffic"], config="one"),
    "proof, several programs": Case(["proof", ADDRESS], ["--program is required", "outreach_reply, ticket_router"]),
    "proof, unknown program": Case(["proof", ADDRESS, "--program", "ticket_router"], ["--program ticket_router", "support_router"], config="one"),
    "rollback, unknown program": Case(["rollback", "nope"], ["program nope", "outreach_reply, ticket_router"]),
    "rollback, no champion": Case(["rollback", "ticket_router", "--to", "1", "--force"], ["--to 1", "teleprompt-ticket_router has no champion"]),
    "demo, no sample program": Case(["demo"], ["one.yaml", "ticket_router", "TELEPROMPT_CONFIG"], config="one"),
    # days
    "run, not a day": Case(["run", "--date", "2026-13-05"], ["--date", "2026-13-05", "YYYY-MM-DD"]),
    "run, not ISO": Case(["run", "--date", "05/12/2026"], ["--date", "YYYY-MM-DD"]),
    "run, before start_date": Case(["run", "--date", "2025-12-31"], ["--date 2025-12-31", "start_date 2026-01-01", str(YESTERDAY)]),
    "run, today": Case(["run", "--date", TODAY.isoformat()], [f"--date {TODAY}", "today", str(YESTERDAY)]),
    "run, future": Case(["run", "--date", (TODAY + timedelta(days=30)).isoformat()], ["--date", "future", str(YESTERDAY)]),
    "seed, not a day": Case(["seed", "--program", "ticket_router", "--end", "2026-02-30"], ["--end", "YYYY-MM-DD"]),
    "seed, future": Case(["seed", "--program", "ticket_router", "--end", (TODAY + timedelta(days=2)).isoformat()], ["--end", str(YESTERDAY)]),
    "seed, before start_date": Case(["seed", "--program", "ticket_router", "--end", "2025-06-01"], ["--end 2025-06-01", "start_date"]),
    # numbers
    "seed, no days": Case(["seed", "--program", "ticket_router", "--days", "0"], ["--days", ">= 1"]),
    "seed, negative per day": Case(["seed", "--program", "ticket_router", "--per-day", "-3"], ["--per-day", ">= 1"]),
    "seed, words for days": Case(["seed", "--program", "ticket_router", "--days", "seven"], ["--days", "'seven'"]),
    "seed, days past the calendar": Case(["seed", "--program", "ticket_router", "--days", "100000000"], ["--days", "'100000000'", "1 to 3,660"]),
    "demo, days past the calendar": Case(["demo", "--days", "100000000"], ["--days", "1 to 3,660"]),
    "demo, no days": Case(["demo", "--days", "0"], ["--days", ">= 1"]),
    "proof, version zero": Case(["proof", ADDRESS, "--program", "ticket_router", "--version", "0"], ["--version", ">= 1"]),
    "proof, no such version": Case(["proof", ADDRESS, "--program", "ticket_router", "--version", "9"], ["--version 9", "teleprompt-ticket_router"]),
    "rollback, version zero": Case(["rollback", "ticket_router", "--to", "0"], ["--to", ">= 1"]),
    "submit, negative deadline": Case(["submit", "BUNDLE", "--rpc", "http://127.0.0.1:8545", "--eas", ADDRESS, "--deadline", "-1"], ["--deadline"]),
    # bundles, addresses, URLs, uids
    "verify, no bundle": Case(["verify", "/nonexistent/bundle"], ["/nonexistent/bundle", "no such folder", "outbox"]),
    "verify offline, no bundle": Case(["verify", "/nonexistent/bundle", "--offline"], ["/nonexistent/bundle", "no such folder"]),
    "verify, a file for a bundle": Case(["verify", str(REPO / "teleprompt.yaml")], ["not a folder"]),
    "verify, a model without version": Case(["verify", "models:/teleprompt-ticket_router"], ["models:/<name>/<version>", "@champion"]),
    "verify, no such model version": Case(["verify", "models:/teleprompt-ticket_router/7"], ["models:/teleprompt-ticket_router/7", "no such model version", "teleprompt status"]),
    "submit, no bundle": Case(["submit", "/nonexistent/bundle", "--rpc", "http://127.0.0.1:8545", "--eas", ADDRESS], ["/nonexistent/bundle"]),
    "submit, folder without attestation": Case(["submit", "BUNDLE", "--rpc", "http://127.0.0.1:8545", "--eas", ADDRESS], ["attestation.json"]),
    "submit, not an RPC URL": Case(["submit", "ATTESTED", "--rpc", "ftp://user:secret@host", "--eas", ADDRESS], ["--rpc", "http"]),
    "submit, bad ref uid": Case(["submit", "ATTESTED", "--rpc", "http://127.0.0.1:8545", "--eas", ADDRESS, "--ref-uid", "0x12"], ["--ref-uid", "32-byte"]),
    "submit, unchecksummed EAS": Case(["submit", "ATTESTED", "--rpc", "http://127.0.0.1:8545", "--eas", ADDRESS.lower()], ["--eas", "checksummed"]),
    "proof, unchecksummed address": Case(["proof", ADDRESS.lower(), "--program", "ticket_router"], ["address", "checksummed"]),
    "run, bad EAS contract": Case(["run"], ["TELEPROMPT_EAS_CONTRACT"], env={"TELEPROMPT_EAS_CONTRACT": "0x12"}),
    "run, bad chain id": Case(["run"], ["TELEPROMPT_EAS_CHAIN_ID"], env={"TELEPROMPT_EAS_CHAIN_ID": "sepolia"}),
    "run, unknown executor": Case(["run"], ["TELEPROMPT_EXECUTOR='dask'", "multiprocess, celery"], env={"TELEPROMPT_EXECUTOR": "dask"}),
    "run, celery without a broker": Case(["run"], ["TELEPROMPT_EXECUTOR=celery", "TELEPROMPT_CELERY_BROKER"], env={"TELEPROMPT_EXECUTOR": "celery"}),
    "run, unsupported storage": Case(["run"], ["TELEPROMPT_STORAGE_URL", "'gs'", "s3://"], env={"TELEPROMPT_STORAGE_URL": "gs://bucket/x"}),
    "status, storage without bucket": Case(["status"], ["TELEPROMPT_STORAGE_URL", "no bucket"], env={"TELEPROMPT_STORAGE_URL": "s3://"}),
    # the command line itself
    "no command": Case([], ["command", "--help"]),
    "unknown command": Case(["serve"], ["serve", "--help"]),
    "unknown option": Case(["run", "--dry"], ["--dry", "--help"]),
}


class Outcome(NamedTuple):
    code: int
    stdout: str
    stderr: str
    dagster_home: Path


def base_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TELEPROMPT_", "DAGSTER_"))}
    return env | {"TELEPROMPT_HOME": str(home / "tp"), "DAGSTER_HOME": str(home / "dagster")}


def invoke(name: str, case: Case, root: Path, paths: dict[str, Path]) -> Outcome:
    home = root / name.replace(" ", "_").replace(",", "")
    home.mkdir()
    (home / "bundle").mkdir()
    attested = home / "attested"
    attested.mkdir()
    (attested / "attestation.json").write_text("{}")
    args = [str(home / "bundle") if a == "BUNDLE" else str(attested) if a == "ATTESTED" else a for a in case.args]
    env = base_env(home) | {"TELEPROMPT_CONFIG": str(paths[case.config])} | case.env
    done = subprocess.run([TELEPROMPT, *args], cwd=home, env=env, capture_output=True, text=True, timeout=300)
    return Outcome(done.returncode, done.stdout, done.stderr, home / "dagster")


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """Every case in its own process, a few at a time (most load the config: seconds each)."""
    root = tmp_path_factory.mktemp("cli")
    paths = configs(root)
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {name: pool.submit(invoke, name, case, root, paths) for name, case in CASES.items()}
        return {name: future.result() for name, future in futures.items()}


def runs_in(dagster_home: Path) -> int:
    db = dagster_home / "history" / "runs.db"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        return conn.execute("select count(*) from runs").fetchone()[0]


@pytest.mark.e2e  # a teleprompt process per case
@pytest.mark.parametrize("name", list(CASES))
def test_a_wrong_input_is_one_line_naming_it_and_the_fix(outcomes, name):
    case, out = CASES[name], outcomes[name]
    assert "Traceback" not in out.stderr + out.stdout, out.stderr[-2000:]
    assert out.code == case.code, (out.code, out.stderr)
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and not out.stdout, (out.stdout, out.stderr)
    for word in case.names:
        assert word in lines[0], (word, lines[0])
    assert runs_in(out.dagster_home) == 0


@pytest.mark.e2e  # a teleprompt process per case
def test_the_rpc_url_is_never_echoed(outcomes):
    out = outcomes["submit, not an RPC URL"]
    assert "secret" not in out.stderr and "user:" not in out.stderr


@pytest.mark.e2e  # a teleprompt process per case
def test_a_config_of_one_program_needs_no_program_flag(tmp_path):
    """``proof`` without ``--program`` takes the only program (here not named ticket_router)."""
    paths = configs(tmp_path)
    out = invoke("one", Case(["proof", ADDRESS], [], config="one"), tmp_path, paths)
    assert "Traceback" not in out.stderr
    assert out.code == 1 and out.stderr.strip() == "teleprompt-support_router has no champion; pass --version"


# --- output of a real run (item 7) ------------------------------------------------------------------

DAY = YESTERDAY


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A tiny day of ticket_router traffic (seeded in a child process, as a user does)."""
    root = tmp_path_factory.mktemp("run")
    env = base_env(root) | {"TELEPROMPT_CONFIG": str(REPO / "teleprompt.yaml")}
    done = subprocess.run([TELEPROMPT, "seed", "--program", "ticket_router", "--days", "1", "--per-day", "16", "--end", DAY.isoformat()],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("seeded 16 traces") and len((done.stdout + done.stderr).splitlines()) == 1, done.stdout + done.stderr
    return env


def run(env: dict[str, str], *extra: str) -> tuple[int, list[str]]:
    done = subprocess.run([TELEPROMPT, "run", "--program", "ticket_router", "--date", DAY.isoformat(), *extra],
                          cwd=env["TELEPROMPT_HOME"].removesuffix("/tp"), env=env, capture_output=True, text=True, timeout=600)
    return done.returncode, (done.stdout + done.stderr).splitlines()


@pytest.mark.e2e  # a teleprompt process per case
def test_run_prints_progress_and_a_summary_only(seeded):
    code, lines = run(seeded)
    assert code == 0, "\n".join(lines[-40:])
    assert any(line.startswith(f"ticket_router {DAY}: run ") for line in lines), lines
    assert len(lines) <= 6, "\n".join(lines)
    noise = [line for line in lines if " - dagster - " in line or "Warning" in line or "%|" in line or "INFO mlflow" in line]
    assert not noise, noise


@pytest.mark.e2e  # a teleprompt process per case
def test_run_verbose_shows_the_event_log(seeded):
    code, lines = run(seeded, "--verbose")
    assert code == 0, "\n".join(lines[-40:])
    assert any(" - dagster - DEBUG - " in line and "STEP_SUCCESS" in line for line in lines)
    assert any(line.startswith(f"ticket_router {DAY}: run ") for line in lines)


@pytest.mark.e2e  # a teleprompt process per case
def test_one_program_runs_in_this_process_and_launched_alike(seeded):
    """One program runs in the CLI's process (no code server, run or step processes); ``--launch``
    takes the schedule's way. Both are Dagster runs of the day's partition with the same outcome."""
    import dagster as dg
    from dagster._core.instance.ref import InstanceRef

    outcomes, kinds = [], []
    for extra in ((), ("--launch",)):
        code, lines = run(seeded, *extra)
        assert code == 0 and len(lines) <= 6, "\n".join(lines[-40:])
        kinds.append(next(line for line in lines if line.startswith("optimizing ")))
        summary = next(line for line in lines if line.startswith(f"ticket_router {DAY}: run "))
        outcomes.append(summary.split("; ", 1)[1])
    assert "in this process" in kinds[0] and "launched" in kinds[1], kinds
    assert outcomes[0] == outcomes[1] and " v1 " in outcomes[0], outcomes
    home = Path(seeded["DAGSTER_HOME"])
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        runs = instance.get_runs(dg.RunsFilter(tags={"dagster/partition": f"{DAY}|ticket_router"}))
        assert len(runs) >= 2 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        assert {r.remote_job_origin.location_name for r in runs if r.remote_job_origin} == {"teleprompt_assets"}  # re-executable from the UI
        assert all(r.remote_job_origin for r in runs)


def test_seed_names_the_champion_it_serves_traffic_with(monkeypatch, tp_home, capsys):
    """The registry hands versions back as integers (the sqlite store); the line once raised a TypeError."""
    from mlflow.entities.model_registry import ModelVersion

    from teleprompt_assets import cli
    from teleprompt_assets.register import registry
    from teleprompt_assets.samples import seed

    champion = ModelVersion(name="teleprompt-ticket_router", version=3, creation_timestamp=0)
    monkeypatch.setattr(registry, "load_champion", lambda client, spec: (spec.build(), champion))
    monkeypatch.setattr(seed, "seed_program", lambda settings, spec, end, **kw: seed.SeedReport(spec.name, [end.isoformat()], 1, 1))
    assert cli.main(["seed", "--program", "ticket_router", "--days", "1", "--per-day", "1"]) == 0
    assert "using champion v3" in capsys.readouterr().out


def _main(capsys, *argv: str) -> tuple[int, list[str], list[str]]:
    """``teleprompt`` in this process. MLflow was imported before the command could set
    ``MLFLOW_LOGGING_LEVEL=ERROR``, so its logger is quietened as that does in a process of its own."""
    import logging

    from teleprompt_assets import cli

    capsys.readouterr()  # what the test's own setup printed
    logger = logging.getLogger("mlflow")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        code = cli.main(list(argv))
    finally:
        logger.setLevel(level)
    out = capsys.readouterr()
    return code, out.out.splitlines(), out.err.splitlines()


def test_rollback_moves_back_to_a_version_that_served_and_refuses_the_rest_in_one_line(reg, capsys):  # noqa: F811
    """Issue 20 item 5: a version that never served, or one newer than the champion, is refused
    (one line, exit 2, champion unchanged) unless ``--force``, which warns and is recorded."""
    from teleprompt_assets.register import registry
    from teleprompt_assets_tests.register.test_registry import _register

    client, spec, _ = reg
    name = spec.registered_model_name
    code, out, err = _main(capsys, "rollback", "ticket_router")
    assert (code, out, len(err)) == (2, [], 1) and "has no champion" in err[0], err
    never = _register(reg, "account", window="w0")
    v2, v3 = _register(reg, "shipping", window="w1"), _register(reg, "billing", window="w2")
    registry.promote(client, name, v2.version, "first")
    registry.promote(client, name, v3.version, "better")

    for argv, words in (
        (["--to", str(never.version)], [f"--to {never.version}", "never served", "--force"]),
        (["--to", "9"], ["--to 9", "no version 9"]),
        (["--to", str(v3.version)], ["already the champion"]),
    ):
        code, out, err = _main(capsys, "rollback", "ticket_router", *argv)
        assert (code, out, len(err)) == (2, [], 1), (argv, code, out, err)
        assert err[0].startswith("teleprompt rollback: ") and all(w in err[0] for w in words), (words, err[0])
    assert int(registry.champion(client, name).version) == v3.version

    code, out, err = _main(capsys, "rollback", "ticket_router")
    assert (code, err) == (0, []) and out == [f"{name}: champion v{v3.version} -> v{v2.version} (validated: loads and runs)"]
    code, out, err = _main(capsys, "rollback", "ticket_router", "--to", str(v3.version))
    assert (code, out, len(err)) == (2, [], 1)
    assert f"rollback moves back; v{v3.version} is newer than the champion v{v2.version}" in err[0], err

    code, out, err = _main(capsys, "rollback", "ticket_router", "--to", str(never.version), "--force")
    assert code == 0 and len(err) == 1 and err[0].startswith("teleprompt rollback: warning: forced: ") and "never served" in err[0], err
    assert out == [f"{name}: champion v{v2.version} -> v{never.version} (validated: loads and runs)"]
    assert client.get_model_version(name, str(never.version)).tags["forced"]
    assert int(registry.champion(client, name).version) == never.version


def test_status_shows_means_in_0_1_and_names_the_sums(reg, capsys):  # noqa: F811
    """Issue 20 item 6: scores are means of the held-out scores; the sums are named as such."""
    import json

    from teleprompt_assets.register import registry
    from teleprompt_assets_tests.register.test_registry import _register

    client, spec, _ = reg
    name = spec.registered_model_name
    v1 = _register(reg, "shipping")
    for key, value in {"baseline_score": 12000000, "candidate_score": 21000000, "eval_count": 29}.items():
        client.set_model_version_tag(name, str(v1.version), key, str(value))
    registry.promote(client, name, v1.version, "first")

    code, out, err = _main(capsys, "status", "--json")
    assert (code, err) == (0, [])
    mine = next(i for i in json.loads("\n".join(out)) if i["program"] == "ticket_router")
    assert mine["champion_scores"] == {"baseline_mean": 12 / 29, "candidate_mean": 21 / 29, "eval_count": 29,
                                       "baseline_sum_q": 12000000, "candidate_sum_q": 21000000}
    code, out, err = _main(capsys, "status")
    block = next(b.splitlines() for b in "\n".join(out).split("\n\n") if "ticket_router" in b.splitlines()[0])
    line = next(line for line in block if line.startswith("champion_scores"))
    assert "baseline 0.4138 -> candidate 0.7241, means over 29 held-out examples" in line, line
    assert "sums of quantized scores 12000000 -> 21000000" in line, line


def test_the_run_line_says_when_a_gain_is_not_significant_and_when_a_step_lacked_demos():
    from teleprompt_assets.cli import run_line

    comparison = {"baseline_mean": 4 / 35, "candidate_mean": 6 / 35, "n": 35, "delta_ppm": 500_000, "deltaone": True, "ci_low_ppm": -333_333,
                  "baseline_sum": 4_000_000, "candidate_sum": 6_000_000}
    out = {"run_id": "r", "registered_version": {"name": "teleprompt-rag", "version": 2}, "champion_alias": {"champion": True},
           "deltaone_attestation": {"attested": False, "reason": "confidence bound not above zero (ci_low_ppm=-333333)"},
           "evaluation_report": {"comparison": comparison},
           "compiled_program": {"demo_shortfall": ["answer.predict: 2 of 20 demos; 34 of 34 training examples lack context (log ...)"]}}
    line = run_line("rag", "2026-12-06", out)
    assert "DeltaOne yes (not significant: 95% CI low -33.3%)" in line
    assert line.endswith("; fewer demos: answer.predict: 2 of 20 demos; 34 of 34 training examples lack context (log ...)")
    significant = out | {"evaluation_report": {"comparison": comparison | {"ci_low_ppm": 1}}, "compiled_program": {}}
    assert "significant" not in run_line("rag", "2026-12-06", significant) and "fewer demos" not in run_line("rag", "2026-12-06", significant)


@pytest.mark.e2e  # a teleprompt process per case
def test_a_spent_budget_ends_the_run_in_two_lines_without_a_traceback(seeded, tmp_path):
    """It printed 297 lines: Dagster's console logger showed every failed step's stack trace."""
    import yaml

    config = yaml.safe_load((REPO / "teleprompt.yaml").read_text()) | {"lm": {"budget": {"max_calls": 5}}}
    (tmp_path / "budget.yaml").write_text(yaml.safe_dump(config))
    code, lines = run(seeded | {"TELEPROMPT_CONFIG": str(tmp_path / "budget.yaml")})
    assert code == 1 and len(lines) <= 3, "\n".join(lines)
    assert not any("Traceback" in line or "Stack Trace" in line for line in lines), lines
    assert "LM budget of run" in lines[-1] and "raise lm.budget in teleprompt.yaml" in lines[-1], lines[-1]
