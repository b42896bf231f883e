"""Shared pieces of the reliability tests (issue 8): scratch space, a seeded store, fault injection,
killable runs and the invariants a store must keep whatever happened to it.

Not a test module; the test files import what they need from here. Everything is real: a sqlite
MLflow store, a sqlite Dagster instance, the sample DSPy program and the project's offline LM.
Faults are injected around the real components: an LM engine that wraps the offline one, and
SIGKILL delivered to a child process running the real job.
"""

from __future__ import annotations

import atexit
import faulthandler
import json
import multiprocessing
import multiprocessing.forkserver
import os
import re
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import dspy
import mlflow
import mlflow.dspy
import pytest
import yaml
from dspy import lm15
from dspy.lm15 import Message, Response, TextPart, Usage
from eth_account import Account

from teleprompt_assets.attest import bundles
from teleprompt_assets_tests.conftest import small_window_config

END = date(2026, 11, 20)
DAYS = 3
PER_DAY = 20
PROGRAM = "ticket_router"
MODEL = f"teleprompt-{PROGRAM}"
ATTESTER_KEY = "0x8f2a55949038a9610f50fb23b5883af3b4ecb3c3bb792cbcefbd1542c692be63"
SIGNER = Account.from_key(ATTESTER_KEY).address
LINEAGE_TAGS = ("program", "program_hash", "window", "dataset_hash", "base_version", "optimizer", "optimizer_config", "dagster_run_id",
                "baseline_score", "candidate_score", "delta_ppm", "eval_count", "contributor_count")
FAST_RETRY = {"TELEPROMPT_COMPILE_RETRIES": "1", "TELEPROMPT_COMPILE_RETRY_DELAY_S": "0"}
UNSET = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "TELEPROMPT_LM", "TELEPROMPT_KEYSTORE", "TELEPROMPT_ARTIFACT_ROOT", "TELEPROMPT_PIPELINE_EXPERIMENT", "TELEPROMPT_START_DATE")
SHM = Path("/dev/shm")


def scratch_root() -> Path | None:
    """A RAM-backed folder when the machine has one: sqlite commits and small-file churn cost
    milliseconds each on this disk. Durability does not matter to these tests (a killed process
    loses nothing the kernel already holds), so the stores there behave as on disk."""
    return SHM if SHM.is_dir() and os.access(SHM, os.W_OK) else None


@pytest.fixture
def fast_tmp(tmp_path: Path) -> Iterator[Path]:
    """A fresh scratch folder, RAM-backed where possible, removed afterwards."""
    root = scratch_root()
    if root is None:
        yield tmp_path
        return
    folder = Path(tempfile.mkdtemp(prefix="tp-test-", dir=root))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def pipeline_env(home: Path, config: Path | None = None) -> dict[str, str]:
    """The template's windows hold ~10 held-out examples: the default config lowers min_holdout (conftest.small_window_config)."""
    return {
        "TELEPROMPT_HOME": str(home), "TELEPROMPT_CONFIG": str(config or _small_config()),
        "MLFLOW_ENABLE_ASYNC_TRACE_LOGGING": "false", "TELEPROMPT_ATTESTER_KEY": ATTESTER_KEY,
        "TELEPROMPT_LM_RETRIES": "0",  # what is tested is what the pipeline does once the LM has failed, not the gateway's backoff
    }


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    for var in UNSET:
        os.environ.pop(var, None)
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


_TEMPLATE: list[Path] = []


def template() -> Path:
    """A store holding DAYS days of seeded ``ticket_router`` traffic up to END, every day but END
    already ingested and curated. Built once per process (seeding costs ~15 s), copied per test.

    The ingest runs log to a throwaway pipeline experiment, so the copies create their own
    ``teleprompt-pipeline`` experiment, with artifacts under their own home. DSPy autologging is
    off while seeding: each trace is the contract's root span (inputs, outputs, tags, feedback and
    expectations), without the nested spans of the program's internals, which nothing here reads.
    """
    if not _TEMPLATE:
        children()  # the fork server imports on the other core meanwhile
        from teleprompt_assets.core.settings import load_settings
        from teleprompt_assets.core.spec import load_project
        from teleprompt_assets.definitions import INGEST_JOB, build_definitions
        from teleprompt_assets.launch import run_partition
        from teleprompt_assets.samples.seed import seed_ticket_router

        root = Path(tempfile.mkdtemp(prefix="tp-template-", dir=scratch_root()))
        atexit.register(shutil.rmtree, root, True)
        home = root / "tp"
        with environment(pipeline_env(home) | {"TELEPROMPT_PIPELINE_EXPERIMENT": "template-ingest"}):
            settings = load_settings()
            spec = load_project(settings.config_path)[1][PROGRAM]
            with pytest.MonkeyPatch.context() as patch:  # root spans only (what the pipeline reads): 3x faster to write
                patch.setattr(mlflow.dspy, "autolog", lambda *args, **kwargs: None)
                seeded = seed_ticket_router(settings, spec, END, days=DAYS, per_day=PER_DAY, seed=0)
            defs = build_definitions()
            (root / "dagster").mkdir()
            with dg.instance_for_test(temp_dir=str(root / "dagster")) as instance:
                for day in seeded.days[:-1]:
                    run_partition(defs, PROGRAM, day, instance, INGEST_JOB)
        _TEMPLATE.append(home)
    return _TEMPLATE[0]


def fresh_store(dest: Path) -> Path:
    """A private copy of the template store; returns its TELEPROMPT_HOME."""
    home = dest / "tp"
    shutil.copytree(template(), home)
    (dest / "dagster").mkdir()
    return home


@pytest.fixture
def warm_home(fast_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the template store as TELEPROMPT_HOME: its MLflow database already exists, which
    saves the ~4 s of creating one, for tests that only need the registry."""
    home = fresh_store(fast_tmp)
    for var in UNSET:
        monkeypatch.delenv(var, raising=False)
    for key, value in pipeline_env(home).items():
        monkeypatch.setenv(key, value)
    return home


def register_sample(queue: str, window: str = "2026-01-01..2026-01-07", base: int = 0):
    """Register a one-demo ticket_router for ``window`` in the store TELEPROMPT_HOME points at."""
    from teleprompt_assets.core.settings import load_settings
    from teleprompt_assets.core.spec import load_project
    from teleprompt_assets.core.tracking import connect, experiment_id
    from teleprompt_assets.optimize.teleprompters import load_state, program_state
    from teleprompt_assets.register import registry

    settings = load_settings()
    client = connect(settings)
    spec = load_project(settings.config_path)[1][PROGRAM]
    program = spec.build()
    program.route.demos = [dspy.Example(message="my parcel never arrived", queue=queue)]
    state = program_state(program)
    sample = {registry.SAMPLE_ARTIFACT: json.dumps({"message": "my parcel never arrived"})}
    return registry.register(client, spec, load_state(spec, state), state, window, experiment_id(client, settings, "teleprompt-pipeline"),
                             {"base_version": base}, sample)


_SMALL_CONFIG: list[Path] = []


def _small_config() -> Path:
    if not _SMALL_CONFIG:
        _SMALL_CONFIG.append(small_window_config())
    return _SMALL_CONFIG[0]


def config_with(dest: Path, **optimizer: Any) -> Path:
    """The test config (min_holdout lowered) with ticket_router's optimizer settings changed."""
    config = yaml.safe_load(_small_config().read_text())
    config["programs"][PROGRAM]["optimizer"].update(optimizer)
    path = dest / "teleprompt.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_job(instance: dg.DagsterInstance, run_config: dict | None = None, assets: list[str] | None = None) -> dg.ExecuteInProcessResult:
    """The optimize job for ticket_router × END (``assets``: re-execute only those, as 'from failure' does)."""
    from teleprompt_assets.definitions import OPTIMIZE_JOB, build_definitions
    from teleprompt_assets.defs.partitions import DATE
    from teleprompt_assets.defs.partitions import PROGRAM as PROGRAM_DIM

    job = build_definitions().resolve_job_def(OPTIMIZE_JOB)
    selection = [dg.AssetKey(a) for a in assets] if assets else None
    return job.execute_in_process(instance=instance, partition_key=dg.MultiPartitionKey({DATE: END.isoformat(), PROGRAM_DIM: PROGRAM}),
                                  raise_on_error=False, run_config=run_config or {}, asset_selection=selection)


def node_of(step_key: str) -> str:
    """The graph node a step belongs to: ``compiled_program`` for its ops' steps, the step itself otherwise."""
    return step_key.split(".")[0].split("[")[0]


def single(value: Any) -> Any:
    """A one-partition run's output, out of its ``ByPartition``."""
    from teleprompt_assets.defs.io import ByPartition

    if isinstance(value, ByPartition):
        [only] = value.values()
        return only
    return value


def failure_of(result: dg.ExecuteInProcessResult, step: str) -> str | None:
    """The failure message of ``step`` (or of a step of that graph node) in ``result`` (description,
    error and the errors that caused it), or None."""
    for event in result.all_events:
        if event.is_step_failure and step in (event.step_key, node_of(event.step_key)):
            data = event.step_failure_data
            parts = [data.user_failure_data.description] if data.user_failure_data else []
            error = data.error
            while error is not None:  # an exception raised in the step comes wrapped in Dagster's
                parts.append(error.message.strip())
                error = error.cause
            return " | ".join(p for p in parts if p)
    return None


def outputs(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    return {name: single(result.output_for_node(name)) for name in ("compiled_program", "registered_version", "champion_alias", "deltaone_attestation")}


# --- fault injection ---------------------------------------------------------------------------

HANG_S = 30.0
CHILD_TIMEOUT_S = 90.0


@dataclass
class FaultyEngine:
    """The offline LM engine with a fault in front of it (a real provider engine fails the same way)."""

    mode: str = "healthy"  # healthy | error | timeout | garbage | hang
    delay_s: float = 0.0
    calls: int = 0

    def __post_init__(self) -> None:
        from teleprompt_assets.core.lm import OfflineEngine

        self.inner = OfflineEngine()

    def complete(self, request):
        self.calls += 1
        if self.mode == "error":
            raise lm15.TransportError("injected fault: connection refused by the LM endpoint")
        if self.mode == "timeout":
            raise lm15.TimeoutError("injected fault: no answer within the per-call timeout")
        if self.mode == "garbage":
            from teleprompt_assets.core.lm import OFFLINE_MODEL

            return Response(id=None, model=OFFLINE_MODEL, message=Message.assistant([TextPart("Sorry, I can't help with that request.")]),
                            finish_reason="stop", usage=Usage(input_tokens=10, output_tokens=8, total_tokens=18))
        if self.mode == "hang":
            time.sleep(HANG_S)
        if self.delay_s:
            time.sleep(self.delay_s)
        return self.inner.complete(request)

    def stream(self, request):
        from dspy.lm15 import response_to_events

        return response_to_events(self.complete(request))

    def close(self) -> None:
        pass


def faulty_lm(mode: str, delay_s: float = 0.0) -> dspy.LM:
    """DSPy's own per-call retries are off (TELEPROMPT_LM_RETRIES=0 for a real LM): what is tested is
    what the pipeline does once the LM has failed, not DSPy's backoff."""
    from teleprompt_assets.core.lm import OFFLINE_MODEL

    return dspy.LM(OFFLINE_MODEL, engine=FaultyEngine(mode=mode, delay_s=delay_s), cache=False, num_retries=0)


def use_lm(mode: str, delay_s: float = 0.0, setattr_: Callable[[Any, str, Any], None] = setattr) -> None:
    """Make every step of the pipeline build the faulty LM (``setattr_``: a monkeypatch's, in tests)."""
    import teleprompt_assets.defs.evaluate as evaluation
    import teleprompt_assets.defs.optimize as compile_
    import teleprompt_assets.defs.reward as rewards

    for module in (compile_, evaluation, rewards):
        setattr_(module, "build_lm", lambda *args, **kwargs: faulty_lm(mode, delay_s))


def act_around(owner: Any, attr: str, action: Callable[[], None], when: Callable[..., bool] = lambda *a, **k: True, before: bool = False,
               setattr_: Callable[[Any, str, Any], None] = setattr) -> None:
    """Run ``action`` right before or right after ``owner.attr`` runs, on the calls ``when`` picks
    (``setattr_``: a monkeypatch's, to undo it)."""
    original = getattr(owner, attr)

    def wrapper(*args, **kwargs):
        hit = when(*args, **kwargs)
        if hit and before:
            action()
        out = original(*args, **kwargs)
        if hit and not before:
            action()
        return out

    setattr_(owner, attr, wrapper)


def kill_self_around(owner: Any, attr: str, when: Callable[..., bool] = lambda *a, **k: True, before: bool = False) -> None:
    """In a child process: SIGKILL ourselves right before or right after ``owner.attr`` runs."""
    act_around(owner, attr, lambda: os.kill(os.getpid(), signal.SIGKILL), when, before)


# --- child processes -----------------------------------------------------------------------------
# Children come from a fork server that imported the project and nothing else: forking the test
# process itself deadlocks (polars' thread pool, already started there, does not survive a fork),
# and a fresh interpreter per child would pay ~10 s of imports each time.

PRELOAD = [  # the project, and what a run would otherwise import lazily in every child
    "teleprompt_assets_tests.reliability", "teleprompt_assets.definitions", "teleprompt_assets.launch", "teleprompt_assets.register.registry",
    "alembic.command", "alembic.migration", "mlflow.store.tracking.sqlalchemy_store", "mlflow.store.model_registry.sqlalchemy_store",
    "mlflow.dspy", "dagster._core.storage.sqlite_storage", "dagster._daemon", "dagster._grpc", "dagster._scheduler", "rich.console",
    "rich.traceback", "git", "fsspec", "cryptography.fernet", "structlog", "watchdog.observers", "upath", "mako.template", "dotenv",
]


def children() -> multiprocessing.context.ForkServerContext:
    """The fork-server context; the first call starts the server, which imports in the background."""
    ctx = multiprocessing.get_context("forkserver")
    if not _SERVER:
        ctx.set_forkserver_preload(PRELOAD)
        multiprocessing.forkserver.ensure_running()
        _SERVER.append(ctx)
    return ctx


_SERVER: list = []


def _kill_after_version() -> None:
    from mlflow import MlflowClient

    kill_self_around(MlflowClient, "create_model_version")


def _kill_mid_bundle() -> None:
    from teleprompt_assets.attest import bundles

    calls = iter(range(1, 100))
    kill_self_around(bundles, "_write_file", when=lambda *a, **k: next(calls) == 3)


def _kill_before_attestation_tag() -> None:
    from mlflow import MlflowClient

    kill_self_around(MlflowClient, "set_model_version_tag", before=True, when=lambda *args, **kwargs: "attestation_uid" in args)


def _kill_after_alias() -> None:
    from mlflow import MlflowClient

    kill_self_around(MlflowClient, "set_registered_model_alias")


SCENARIOS: dict[str, Callable[[], None]] = {
    "healthy": lambda: None,
    "slow_lm": lambda: use_lm("healthy", delay_s=0.05),  # ~0.1 s per LM call: compiling takes seconds
    "kill_after_version": _kill_after_version,  # SIGKILL right after the registry created the version
    "kill_mid_bundle": _kill_mid_bundle,  # SIGKILL after writing 3 of the bundle's 7 files
    "kill_before_attestation_tag": _kill_before_attestation_tag,  # SIGKILL after publishing, before the version records it
    "kill_after_alias": _kill_after_alias,  # SIGKILL right after `champion` moved
}


def _child_main(env: dict[str, str], instance_dir: str, scenario: str, assets: list[str] | None, barrier: Any) -> None:
    code = 2
    try:
        faulthandler.dump_traceback_later(CHILD_TIMEOUT_S, exit=True)  # a stuck child shows where, then exits
        for var in UNSET:
            os.environ.pop(var, None)
        os.environ.update(env)
        SCENARIOS[scenario]()
        with dg.instance_for_test(temp_dir=instance_dir) as instance:
            if barrier is not None:
                barrier.wait(timeout=60)
            code = 0 if run_job(instance, assets=assets).success else 1
    except BaseException:  # noqa: BLE001 - report, then exit with the code
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _promote_main(env: dict[str, str], scenario: str, name: str, version: int, reason: str) -> None:
    code = 2
    try:
        for var in UNSET:
            os.environ.pop(var, None)
        os.environ.update(env)
        from teleprompt_assets.core.settings import load_settings
        from teleprompt_assets.core.tracking import connect
        from teleprompt_assets.register import registry

        SCENARIOS[scenario]()
        registry.promote(connect(load_settings()), name, version, reason)
        code = 0
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
    finally:
        os._exit(code)


def _register_main(env: dict[str, str], lock_dir: str | None, barrier: Any, results: Any) -> None:
    """Register the same small program for the same window as every other caller, at the barrier."""
    code = 2
    try:
        for var in UNSET:
            os.environ.pop(var, None)
        os.environ.update(env)
        from teleprompt_assets.core.settings import load_settings
        from teleprompt_assets.core.spec import load_project
        from teleprompt_assets.core.tracking import connect, experiment_id
        from teleprompt_assets.optimize.teleprompters import load_state, program_state
        from teleprompt_assets.register import registry

        settings = load_settings()
        client = connect(settings)
        spec = load_project(settings.config_path)[1][PROGRAM]
        program = spec.build()
        program.route.demos = [dspy.Example(message="my parcel never arrived", queue="shipping")]
        state = program_state(program)
        experiment = experiment_id(client, settings, "teleprompt-pipeline")
        barrier.wait(timeout=60)
        done = registry.register(client, spec, load_state(spec, state), state, "2026-01-01..2026-01-07", experiment, {"base_version": 0},
                                 lock_dir=Path(lock_dir) if lock_dir else None)
        results.put((done.version, done.created))
        code = 0
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def start_register(env: dict[str, str], lock_dir: str | None, barrier: Any, results: Any):
    child = children().Process(target=_register_main, args=(env, lock_dir, barrier, results), daemon=True)
    child.start()
    return child


def start_run(env: dict[str, str], instance_dir: Path, scenario: str = "healthy", assets: list[str] | None = None, barrier: Any = None):
    """Run the job in a child process under ``scenario``; returns the started process.

    Exit codes: 0 the run succeeded, 1 it failed, 2 an exception, -9 SIGKILL.
    """
    child = children().Process(target=_child_main, args=(env, str(instance_dir), scenario, assets, barrier), daemon=True)
    child.start()
    return child


def start_promote(env: dict[str, str], scenario: str, name: str, version: int, reason: str):
    child = children().Process(target=_promote_main, args=(env, scenario, name, version, reason), daemon=True)
    child.start()
    return child


def wait_child(child, timeout_s: float = CHILD_TIMEOUT_S + 10) -> int:
    """The child's exit code (negative: killed by that signal)."""
    child.join(timeout_s)
    if child.is_alive():
        child.kill()
        child.join()
        raise AssertionError(f"child {child.pid} still running after {timeout_s} s")
    return child.exitcode


def step_events(instance: dg.DagsterInstance, step: str, event_type: dg.DagsterEventType) -> list:
    found = []
    for record in instance.get_run_records():
        found += [e for e in instance.all_logs(record.dagster_run.run_id, of_type=event_type) if e.step_key == step or e.step_key.startswith(step + "[")]
    return found


# --- the state a store must be in, whatever happened -------------------------------------------

BUNDLE_FILES = set(bundles.BUNDLE_FILES)
UID = re.compile(r"0x[0-9a-f]{64}")


@dataclass
class Store:
    versions: dict[int, dict[str, str]]
    champion: int | None
    bundles: list[Path]
    problems: list[str]


def inspect_store() -> Store:
    """Read the store TELEPROMPT_HOME points at and list every broken invariant:

    - every model version carries its lineage tags; at most one per (programHash, window);
    - the champion alias, if set, points at a version whose promotion is recorded;
    - the outbox holds only complete bundles, each named by its uid, verifying end to end against
      the attester and the registered version it names (no attestation without its version);
    - every version tagged with an attestation uid has that bundle in the outbox and in its run's
      ``attestation/`` artifacts.
    """
    from mlflow.exceptions import MlflowException

    from teleprompt_assets.attest import eas
    from teleprompt_assets.attest.bundles import SCHEMA, verify_bundle
    from teleprompt_assets.core.settings import load_settings
    from teleprompt_assets.core.tracking import connect
    from teleprompt_assets.register import registry

    settings = load_settings()
    client = connect(settings)
    problems: list[str] = []
    try:
        versions = {int(v.version): v for v in client.search_model_versions(f"name = '{MODEL}'")}
    except MlflowException:
        versions = {}
    for number, version in versions.items():
        missing = [t for t in LINEAGE_TAGS if not version.tags.get(t)]
        if missing:
            problems.append(f"v{number} has no lineage tags {missing}")
    twins = Counter((v.tags.get("program_hash"), v.tags.get("window")) for v in versions.values())
    problems += [f"{n} versions hold {pair}" for pair, n in twins.items() if n > 1]
    current = registry.champion(client, MODEL)
    if current is not None:
        if not current.tags.get("promoted_at") and not current.tags.get("restored_at"):
            problems.append(f"champion v{current.version} has no promotion record")
        before = current.tags.get("previous_champion")
        if before and int(before) in versions and not versions[int(before)].tags.get("demoted_at"):
            problems.append(f"v{before} was replaced as champion but not marked demoted")
    bundles = []
    if settings.outbox.exists():
        for entry in sorted(settings.outbox.rglob("*")):
            rel = entry.relative_to(settings.outbox)
            if len(rel.parts) == 1 and entry.is_dir() and rel.parts[0] == PROGRAM:
                continue
            if len(rel.parts) == 2 and entry.is_dir() and UID.fullmatch(entry.name):
                bundles.append(entry)
                continue
            if len(rel.parts) == 3 and entry.parent in bundles:
                continue
            problems.append(f"outbox holds {rel}, which is not part of a bundle")
    for bundle in bundles:
        names = {p.name for p in bundle.iterdir()}
        if names != BUNDLE_FILES:
            problems.append(f"partial bundle {bundle.name}: {sorted(names)}")
            continue
        attestation = json.loads((bundle / "attestation.json").read_text())
        if attestation.get("uid") != bundle.name:
            problems.append(f"bundle {bundle.name} holds attestation {attestation.get('uid')}")
        number = eas.decode_data(SCHEMA, attestation["message"]["data"])["modelVersion"]
        if number not in versions:
            problems.append(f"bundle {bundle.name} attests v{number}, which does not exist")
            continue
        problems += [f"bundle {bundle.name}: {p}" for p in verify_bundle(bundle, SIGNER, registered_program_hash=versions[number].tags.get("program_hash"))]
    for number, version in versions.items():
        uid = version.tags.get("attestation_uid")
        if not uid:
            continue
        if not (settings.outbox / PROGRAM / uid).is_dir():
            problems.append(f"v{number} is tagged with attestation {uid} but the outbox lacks it")
        logged = {Path(a.path).name for a in client.list_artifacts(version.run_id, "attestation")}
        if logged != BUNDLE_FILES:
            problems.append(f"v{number}'s run holds attestation artifacts {sorted(logged)}")
    return Store({n: dict(v.tags) for n, v in versions.items()}, int(current.version) if current is not None else None, bundles, problems)
