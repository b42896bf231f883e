import os
from contextlib import contextmanager
from pathlib import Path

import pytest

import teleprompt_assets  # noqa: F401 - before any test module imports eth-account: it undoes py_ecc's recursion limit (see the package docstring)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def tp_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh TELEPROMPT_HOME (sqlite MLflow store, Dagster home, keys, outbox) per test."""
    home = tmp_path / "tp"
    monkeypatch.setenv("TELEPROMPT_HOME", str(home))
    monkeypatch.setenv("TELEPROMPT_CONFIG", str(REPO / "teleprompt.yaml"))
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "TELEPROMPT_LM", "TELEPROMPT_ATTESTER_KEY", "TELEPROMPT_KEYSTORE", "TELEPROMPT_ARTIFACT_ROOT", "TELEPROMPT_START_DATE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MLFLOW_ENABLE_ASYNC_TRACE_LOGGING", "false")
    return home


@pytest.fixture(scope="session")
def session_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tp-session")


def set_env(home: Path) -> dict[str, str]:
    """Env for a module-scoped store (monkeypatch is function-scoped)."""
    saved = dict(os.environ)
    os.environ["TELEPROMPT_HOME"] = str(home)
    os.environ["TELEPROMPT_CONFIG"] = str(REPO / "teleprompt.yaml")
    os.environ["MLFLOW_ENABLE_ASYNC_TRACE_LOGGING"] = "false"
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "TELEPROMPT_LM", "TELEPROMPT_ATTESTER_KEY", "TELEPROMPT_KEYSTORE", "TELEPROMPT_ARTIFACT_ROOT", "TELEPROMPT_START_DATE"):
        os.environ.pop(var, None)
    return saved


@pytest.fixture(autouse=True)
def _no_active_mlflow_model():
    """``mlflow.*.load_model`` leaves an active model id behind; it must not leak into the next test's store."""
    yield
    import mlflow

    mlflow.clear_active_model()


@pytest.fixture(autouse=True)
def _no_stale_dagster_defs_state(monkeypatch: pytest.MonkeyPatch):
    """A Dagster instance registers its defs-state storage in a context variable and resets it on
    exit; fixtures that open and close instances in other orders, or an instance collected without
    being closed, can leave one whose instance is gone ("undefined DagsterInstance weakref", seen in
    1 of 3 CI runs). Each test starts without one, and a storage whose instance is gone reads as none."""
    from dagster._core.storage.defs_state.base import DefsStateStorage, _current_storage

    def live(cls):
        storage = _current_storage.get()
        ref = getattr(storage, "_instance_weakref", None)
        return None if storage is not None and ref is not None and ref() is None else storage

    _current_storage.set(None)
    monkeypatch.setattr(DefsStateStorage, "get", classmethod(live))
    yield


@contextmanager
def project_config(dest: Path, program: str, **fields):
    """The current config (``TELEPROMPT_CONFIG``) with ``program``'s ``fields`` replaced, as ``TELEPROMPT_CONFIG`` for the block."""
    import yaml

    config = yaml.safe_load(Path(os.environ.get("TELEPROMPT_CONFIG") or REPO / "teleprompt.yaml").read_text())
    config["programs"][program].update(fields)
    path = dest / "teleprompt.yaml"
    path.write_text(yaml.safe_dump(config))
    previous = os.environ.get("TELEPROMPT_CONFIG")
    os.environ["TELEPROMPT_CONFIG"] = str(path)
    try:
        yield path
    finally:
        os.environ["TELEPROMPT_CONFIG"] = previous if previous is not None else str(REPO / "teleprompt.yaml")


SMALL_WINDOW_MIN_HOLDOUT = 5


def small_window_config(dest: Path | None = None, base: Path | None = None) -> Path:
    """``teleprompt.yaml`` (or ``base``) with every program's ``split.min_holdout`` at 5, for tests
    whose subject is not the evidence rule (faults, outages, idempotency, the secret sweep, scale-out).

    Their stores hold a few days of ~20 traces, about 10 held-out examples: below the product's
    default of 20, nothing would be promoted or attested and those tests would check nothing.
    Seeding each up to 20 held-out examples would cost ~2x their data and time. The evidence rule
    itself is tested with the default (test_promotion, defs/test_pipeline, defs/test_promises).
    """
    import tempfile

    import yaml

    config = yaml.safe_load((base or REPO / "teleprompt.yaml").read_text())
    for entry in config["programs"].values():
        entry["split"] = (entry.get("split") or {}) | {"min_holdout": SMALL_WINDOW_MIN_HOLDOUT}
    path = (dest or Path(tempfile.mkdtemp(prefix="tp-config-"))) / "teleprompt.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def config_with_sections(dest: Path, **sections) -> Path:
    """The shipped ``teleprompt.yaml`` with top-level sections (``automation``, ``quality``…) replaced."""
    import yaml

    config = yaml.safe_load((REPO / "teleprompt.yaml").read_text()) | sections
    path = dest / "teleprompt.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory):
    """An S3-compatible server (moto) for the module, with bucket ``teleprompt`` and its AWS_* settings in the environment."""
    from teleprompt_assets_tests.servers import s3_server

    with s3_server(tmp_path_factory.mktemp("s3")) as server:
        saved = dict(os.environ)
        os.environ.update(server.env())
        try:
            yield server
        finally:
            os.environ.clear()
            os.environ.update(saved)
