"""MLflow model registry: one registered model per program, lineage tags, champion alias.

A version is identified by what it contains (programHash) and the data window it learned from;
registering the same pair again returns the existing version, so re-running a partition never
creates a second one. The ``champion`` alias marks the serving version; every move is recorded in
the version's tags so the history of promotions and rollbacks can be read back from MLflow.

Crashes and concurrent runs:
- a version is created with all its lineage tags in one registry transaction, so none exists
  without them;
- registration of one program and window is serialized by an OS file lock under
  ``TELEPROMPT_HOME/locks`` (released by the kernel if the holder dies), and the existing-version
  check is repeated once the lock is held; when writers share no lock folder (several machines),
  the lowest version number wins and a writer that lost the race deletes its own version;
- a promotion records its tags before it moves the alias, and a re-run completes a promotion that
  was interrupted after the move;
- a lookup that gets no answer from the tracking server raises: only the registry saying "not
  found" means there is no champion or no such version (:func:`absent`).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

import dspy
import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import Model

from teleprompt_assets.core.encoding import canonical_bytes, loads_bounded
from teleprompt_assets.core.spec import ProgramSpec
from teleprompt_assets.core.tracking import NOTE_TAG
from teleprompt_assets.core.window import window_end
from teleprompt_assets.evaluate.deltaone import SCALE
from teleprompt_assets.optimize.teleprompters import load_state
from teleprompt_assets.register import promotion
from teleprompt_assets.register.artifacts import (  # noqa: F401 (SERVED_DSPY_SETTINGS, model_signature: callers')
    MAX_STATE_BYTES,
    MODEL_ARTIFACT,
    SERVED_DSPY_SETTINGS,
    STATE_ARTIFACT,
    TamperedArtifact,
    UntrustedModelSource,
    model_signature,
    program_hash,
    read_state,
    served_pickle,
    verified_program,
)
from teleprompt_assets.register.locks import LOCK_TIMEOUT_ENV, RegistryBusy, registration_lock  # noqa: F401 (LOCK_TIMEOUT_ENV, RegistryBusy: callers')

CHAMPION = "champion"
SAMPLE_ARTIFACT = "sample_input.json"
MAX_SMALL_ARTIFACT_BYTES = 16 << 20  # a sample input, the reward components: JSON the pipeline wrote, read back bounded


def pip_requirements() -> list[str]:
    """Explicit requirements: inferring them costs seconds per log and adds nothing we don't know."""
    import eth_account
    import polars

    return [f"dspy=={dspy.__version__}", f"mlflow=={mlflow.__version__}", f"polars=={polars.__version__}", f"eth-account=={eth_account.__version__}"]


class _ServedDspyFlavor:
    """``mlflow.dspy``, less the logging process's DSPy settings.

    ``mlflow.dspy.save_model`` pickles all of ``dspy.settings`` with the program, and
    ``mlflow.dspy.load_model`` configures DSPy with them: loading a version replaced the LM an
    application had configured with the pipeline's (None: "No LM is loaded"). The program is pickled
    again beside the same MLmodel with :data:`SERVED_DSPY_SETTINGS` only, so loading leaves the
    application's LM, adapter and other settings as they are. :func:`served_pickle` is the one recipe,
    which the artifact check (:mod:`teleprompt_assets.register.artifacts`) repeats to compare.
    """

    @staticmethod
    def save_model(path: str, mlflow_model: Model, model: dspy.Module, validate_serving_input: bool = True, **kwargs: Any) -> None:
        mlflow.dspy.save_model(model, path, mlflow_model=mlflow_model, **kwargs)
        pickled = served_pickle(model, mlflow_model.signature.outputs if mlflow_model.signature else None)
        Path(path, mlflow_model.flavors["dspy"]["model_path"]).write_bytes(pickled)


def _log_program(spec: ProgramSpec, program: dspy.Module, sample: dict[str, Any] | None) -> Any:
    """Log with its signature and sample input, explicit requirements (inferring them costs seconds),
    and no check that runs the sample: that needs an LM, and a version carries none."""
    return Model.log(
        None, _ServedDspyFlavor, name=MODEL_ARTIFACT, flavor_name="mlflow.dspy", model=program, signature=model_signature(spec),
        input_example=sample, pip_requirements=pip_requirements(), validate_serving_input=False,
    )


def _sample(artifacts: dict[str, str] | None) -> dict[str, Any] | None:
    text = (artifacts or {}).get(SAMPLE_ARTIFACT)
    return json.loads(text) if text else None


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: int
    run_id: str
    program_hash: str
    created: bool

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def absent(exc: MlflowException) -> bool:
    """The registry answered that the model, version or alias asked for does not exist (a missing
    alias comes as INVALID_PARAMETER_VALUE), rather than not answering: a tracking server that is
    down, timing out or failing. Only an answer means "none". Taking an outage for an empty
    registry measures a candidate against the uncompiled program instead of the champion, promotes
    without recording the champion it replaces, and skips the check that a new version is the
    lowest of its program and window."""
    return exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


def find_versions(client: MlflowClient, name: str, prog_hash: str, window: str) -> list[ModelVersion]:
    """Every version of ``name`` holding ``prog_hash`` for ``window``, lowest number first."""
    try:
        found = client.search_model_versions(f"name = '{name}' and tags.program_hash = '{prog_hash}' and tags.window = '{window}'")
    except MlflowException as exc:
        if not absent(exc):
            raise
        return []
    return sorted(found, key=lambda v: int(v.version))


def find_version(client: MlflowClient, name: str, prog_hash: str, window: str) -> ModelVersion | None:
    found = find_versions(client, name, prog_hash, window)
    return found[0] if found else None


def champion(client: MlflowClient, name: str) -> ModelVersion | None:
    """The version ``champion`` points at; None when there is none, an error when the registry does not answer."""
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as exc:
        if not absent(exc):
            raise
        return None


def load_program_state(client: MlflowClient, version: ModelVersion) -> dict[str, Any]:
    """The JSON state of a version (rebuilt from JSON, never unpickled), read behind a size and depth
    bound and refused (:class:`TamperedArtifact`) unless it hashes to the version's registered
    ``program_hash``: the baseline and the warm-start teacher are what was registered."""
    what = f"{STATE_ARTIFACT} ({version.name} v{version.version})"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(client.download_artifacts(version.run_id, STATE_ARTIFACT, tmp))
        if path.stat().st_size > MAX_STATE_BYTES:
            raise TamperedArtifact(f"{what}: {path.stat().st_size:,} bytes, over its limit of {MAX_STATE_BYTES:,}; not read")
        state = read_state(path.read_bytes(), what)
    registered = version.tags.get("program_hash")
    if registered and program_hash(state) != registered.lower():
        raise TamperedArtifact(f"{what}: keccak256 is {program_hash(state)}, not the registered program_hash {registered}; not loaded")
    return state


def load_champion(client: MlflowClient, spec: ProgramSpec) -> tuple[dspy.Module, ModelVersion] | None:
    version = champion(client, spec.registered_model_name)
    if version is None:
        return None
    return load_state(spec, load_program_state(client, version)), version


def register(
    client: MlflowClient,
    spec: ProgramSpec,
    program: dspy.Module,
    state: dict[str, Any],
    window: str,
    experiment_id: str,
    tags: dict[str, Any],
    artifacts: dict[str, str] | None = None,
    run_name: str | None = None,
    lock_dir: Path | None = None,
    params: dict[str, str] | None = None,
    metrics: dict[str, float] | None = None,
    description: str | None = None,
) -> RegisteredVersion:
    """Log the program (mlflow.dspy flavor + JSON state) and register it, unless already registered.

    The version gets a run of its own: a child of the active MLflow run when there is one (the
    Dagster run's, via dagster-mlflow), else a top-level run. One Dagster run may optimize several
    programs; a shared run would hold only the last program's files under names they all use.

    ``artifacts`` (file name → text) travel with the version: the A/B report, the per-example
    scores, the contributor list; :data:`SAMPLE_ARTIFACT` among them is also the model's input
    example, next to its signature (:func:`model_signature`). The model carries none of DSPy's
    settings but the callbacks key (:class:`_ServedDspyFlavor`): the LM is the serving app's.
    ``lock_dir`` (default ``TELEPROMPT_HOME/locks``) holds the registration locks; see
    :func:`registration_lock`.

    The run also gets ``params`` (the optimizer's settings; ``program``, ``program_hash`` and
    ``window`` always), ``metrics`` (held-out means in [0, 1], ``lineage.version_metrics``) and
    ``description``, which is the version's description and its run's note. All are written once,
    when the version is created: a re-run that finds it writes nothing (MLflow params are write-once).
    """
    name = spec.registered_model_name
    prog_hash = program_hash(state)
    existing = find_version(client, name, prog_hash, window)
    if existing is not None:
        return RegisteredVersion(name, int(existing.version), existing.run_id, prog_hash, created=False)
    with registration_lock(lock_dir or _default_lock_dir(), name, window):
        existing = find_version(client, name, prog_hash, window)  # a concurrent run may have registered it meanwhile
        if existing is not None:
            return RegisteredVersion(name, int(existing.version), existing.run_id, prog_hash, created=False)
        _ensure_registered_model(client, spec)
        all_tags = {k: str(v) for k, v in tags.items()} | {"program_hash": prog_hash, "window": window, "program": spec.name}
        active = mlflow.active_run()
        parent = {"experiment_id": active.info.experiment_id, "nested": True} if active is not None else {"experiment_id": experiment_id}
        with mlflow.start_run(run_name=run_name or f"{spec.name}:{window}", **parent) as run:
            mlflow.set_tags(all_tags | ({NOTE_TAG: description} if description else {}))
            mlflow.log_params((params or {}) | {"program": spec.name, "program_hash": prog_hash, "window": window})
            if metrics:
                mlflow.log_metrics(metrics)
            with dspy.context(lm=None):
                info = _log_program(spec, program, _sample(artifacts))
            mlflow.log_text(canonical_bytes(state).decode("utf-8"), STATE_ARTIFACT)
            for file_name, text in (artifacts or {}).items():
                mlflow.log_text(text, file_name)
            # one registry transaction: the version and all its lineage tags, or nothing
            version = client.create_model_version(name, info.model_uri, run_id=run.info.run_id, tags=all_tags, description=description,
                                                  model_id=info.model_id)
        winner = find_version(client, name, prog_hash, window)
        if winner is not None and int(winner.version) != int(version.version):  # raced a writer on another machine: the lowest wins
            client.delete_model_version(name, str(version.version))
            return RegisteredVersion(name, int(winner.version), winner.run_id, prog_hash, created=False)
    return RegisteredVersion(name, int(version.version), run.info.run_id, prog_hash, created=True)


def _ensure_registered_model(client: MlflowClient, spec: ProgramSpec) -> None:
    try:
        client.get_registered_model(spec.registered_model_name)
    except MlflowException:
        try:
            client.create_registered_model(spec.registered_model_name, description=f"Optimized versions of the DSPy program '{spec.name}' ({spec.config.module}).")
        except MlflowException:
            client.get_registered_model(spec.registered_model_name)


def promote_if_better(client: MlflowClient, name: str, version: int, baseline_version: int, baseline_sum: int, candidate_sum: int, n: int,
                      min_holdout: int, lock_dir: Path | None = None, *, ci_low_ppm: int | None = None, require_significance: bool = False) -> tuple[bool, str]:
    """Move ``champion`` to ``version`` if :func:`teleprompt_assets.register.promotion.decide` allows it; a
    refusal is recorded on the version. Reading the champion, deciding and moving the alias happen
    under the program's promotion lock, so two runs finishing together cannot both act on the
    champion they read."""
    with registration_lock(lock_dir or _default_lock_dir(), name, "champion"):
        tags = client.get_model_version(name, str(version)).tags
        current = champion(client, name)
        serving = None if current is None else promotion.Champion(int(current.version), _window_end(current.tags.get("window")))
        decision = promotion.decide(promotion.Candidate(
            version=version, baseline_version=baseline_version, baseline_sum=baseline_sum, candidate_sum=candidate_sum, n=n,
            window_end=_window_end(tags.get("window")) or "", rolled_back_at=tags.get("rolled_back_at"), ci_low_ppm=ci_low_ppm,
        ), serving, min_holdout, require_significance)
        if decision.promote:
            promote(client, name, version, decision.reason)
        elif not tags.get("rolled_back_at"):
            client.set_model_version_tag(name, str(version), "promotion_refused", decision.reason)
    return decision.promote, decision.reason


def _window_end(window: str | None) -> str | None:
    return window_end(window)


def _default_lock_dir() -> Path:
    from teleprompt_assets.core.settings import load_settings

    return load_settings().home / "locks"


def promote(client: MlflowClient, name: str, version: int, reason: str) -> int | None:
    """Move ``champion`` to ``version``; returns the previous champion. Recorded in both versions' tags.

    The new champion's tags are written before the alias moves and the old one's after, so a crash
    leaves either the old alias (the re-run promotes again) or the new alias with its record, which
    a re-run completes (:func:`_complete_promotion`).
    """
    previous = champion(client, name)
    if previous is not None and int(previous.version) == version:
        _complete_promotion(client, name, previous, reason)
        return version
    now = datetime.now(UTC).isoformat(timespec="seconds")
    client.set_model_version_tag(name, str(version), "promotion_reason", reason)
    if previous is not None:
        client.set_model_version_tag(name, str(version), "previous_champion", str(previous.version))
    client.set_model_version_tag(name, str(version), "promoted_at", now)
    client.set_registered_model_alias(name, CHAMPION, str(version))
    if previous is not None:
        client.set_model_version_tag(name, str(previous.version), "demoted_at", now)
    return int(previous.version) if previous is not None else None


def _complete_promotion(client: MlflowClient, name: str, current: ModelVersion, reason: str) -> None:
    """The alias already points at ``current``: fill in whatever record a crash left out."""
    promoted_at = current.tags.get("promoted_at")
    if not promoted_at:
        promoted_at = datetime.now(UTC).isoformat(timespec="seconds")
        if not current.tags.get("promotion_reason"):
            client.set_model_version_tag(name, str(current.version), "promotion_reason", reason)
        client.set_model_version_tag(name, str(current.version), "promoted_at", promoted_at)
    before = current.tags.get("previous_champion")
    if before:
        try:
            demoted = client.get_model_version(name, before)
        except MlflowException as exc:
            if absent(exc):  # the old champion was deleted since: nothing left to mark
                return
            raise
        if not demoted.tags.get("demoted_at"):
            client.set_model_version_tag(name, before, "demoted_at", promoted_at)


def baseline_for(client: MlflowClient, spec: ProgramSpec, prog_hash: str, window: str) -> tuple[dspy.Module, int]:
    """The program to beat and its version (0 = the uncompiled program).

    A candidate already registered for this window keeps the baseline it was first measured
    against, so re-running a partition after promotion reproduces the same evaluation.
    """
    name = spec.registered_model_name
    existing = find_version(client, name, prog_hash, window)
    if existing is not None:
        base = int(existing.tags.get("base_version", "0"))
        if base == 0:
            return spec.build(), 0
        return load_state(spec, load_program_state(client, client.get_model_version(name, str(base)))), base
    current = load_champion(client, spec)
    if current is None:
        return spec.build(), 0
    program, version = current
    return program, int(version.version)


def previous_attestation(client: MlflowClient, name: str, before_version: int) -> str | None:
    """uid of the program's latest attestation on a version older than ``before_version``."""
    versions = client.search_model_versions(f"name = '{name}'")
    attested = [v for v in versions if int(v.version) < before_version and v.tags.get("attestation_uid")]
    return max(attested, key=lambda v: int(v.version)).tags["attestation_uid"] if attested else None


def trusted_model_uri(client: MlflowClient, version: ModelVersion, pipeline_experiment: str | None = None) -> str:
    """Where ``version``'s model artifacts are, refused unless inside the pipeline experiment's artifact location.

    :func:`register` logs every model into the pipeline experiment (``TELEPROMPT_PIPELINE_EXPERIMENT``),
    so a version whose source lies anywhere else (another store, another experiment, a ``..`` path)
    was not registered by this pipeline, and loading it would run whatever its pickle holds.
    """
    if pipeline_experiment is None:
        from teleprompt_assets.core.settings import load_settings

        pipeline_experiment = load_settings().pipeline_experiment
    what = f"{version.name} v{version.version}"
    experiment = client.get_experiment_by_name(pipeline_experiment)
    if experiment is None:
        raise UntrustedModelSource(f"{what}: this registry has no experiment {pipeline_experiment!r}, so no model of it can be trusted")
    uri = client.get_model_version_download_uri(version.name, str(version.version))
    root = experiment.artifact_location.rstrip("/") + "/"
    if not uri.startswith(root) or ".." in PurePosixPath(unquote(urlsplit(uri).path)).parts:
        raise UntrustedModelSource(
            f"{what}: its model artifacts are at {uri}, outside the pipeline's artifact location {root}; "
            "not loaded (mlflow.dspy models are pickles: loading one runs code chosen by whoever wrote it)"
        )
    return uri


def load_registered_model(client: MlflowClient, spec: ProgramSpec, version: ModelVersion, expected_hash: str | None = None,
                          pipeline_experiment: str | None = None) -> dspy.Module:
    """``version``'s program, built from its JSON state, never unpickled, once everything it serves
    is what ``expected_hash`` vouches for (default: the version's registered ``program_hash``).

    The model's location is checked first (:func:`trusted_model_uri`); then ``program_state.json``
    must hash to ``expected_hash`` and ``data/model.pkl`` must be that program's pickle, compared
    operation by operation without running it (:func:`teleprompt_assets.register.artifacts.inspect_version`).
    Any difference raises :class:`TamperedArtifact` naming the artifact; the program class comes
    from ``spec`` (the operator's config), its demos and instructions from the verified JSON. DSPy's
    global settings are not touched.
    """
    uri = trusted_model_uri(client, version, pipeline_experiment)
    expected = expected_hash or version.tags.get("program_hash")
    if not expected:
        raise TamperedArtifact(f"{version.name} v{version.version}: no registered program_hash and no attestation vouches for its artifacts; not loaded")
    return verified_program(client, spec, version, expected, uri)


def small_json(client: MlflowClient, run_id: str, name: str, tmp: str) -> Any:
    """A small JSON artifact the pipeline wrote (sample input, reward components), read back bounded."""
    path = Path(client.download_artifacts(run_id, name, tmp))
    if path.stat().st_size > MAX_SMALL_ARTIFACT_BYTES:
        raise ValueError(f"{name}: {path.stat().st_size:,} bytes, over its limit of {MAX_SMALL_ARTIFACT_BYTES:,}")
    return loads_bounded(path.read_bytes(), max_bytes=MAX_SMALL_ARTIFACT_BYTES)


def record_attestation(client: MlflowClient, name: str, version: int, run_id: str, bundle: Path, uid: str, attester: str) -> None:
    """Store a published bundle with its version: files first, then the attester, the uid last, so a
    version never names an attestation whose files it lacks."""
    client.log_artifacts(run_id, str(bundle), artifact_path="attestation")
    client.set_model_version_tag(name, str(version), "attester", attester)
    client.set_model_version_tag(name, str(version), "attestation_uid", uid)


REWARD_COMPONENTS = "rewards/components.json"


def record_reward_components(client: MlflowClient, run_id: str, rows: list[dict[str, Any]]) -> None:
    """Each contributor's reward components beside its weight, so ``teleprompt proof`` can say why it
    earned what it earned. Kept with the version's run, outside the signed bundle: the bundle's
    format is fixed (docs/architecture.md#attestation-schema-and-bundle-files) and the weight it signs is what a claim pays."""
    client.log_dict(run_id, {"contributors": rows}, REWARD_COMPONENTS)


def reward_components(client: MlflowClient, version: ModelVersion, dest: Path) -> dict[str, dict[str, Any]]:
    """Components by lower-cased address; empty for versions attested before they were kept."""
    try:
        rows = small_json(client, version.run_id, REWARD_COMPONENTS, str(dest)).get("contributors", [])
    except (MlflowException, OSError, ValueError, AttributeError):
        return {}
    return {str(r["contributor"]).lower(): r for r in rows if isinstance(r, dict)}


class OversizedArtifact(ValueError):
    """A stored file is larger than its reader allows; it was not downloaded."""


def download_attestation(client: MlflowClient, version: ModelVersion, dest: Path, limits: Mapping[str, int] | None = None) -> Path:
    """The evidence bundle stored with a version (``attestation/`` artifacts of its run).

    With ``limits`` (file name → most bytes: the verifier's ``MAX_FILE_BYTES``) only those names are
    downloaded, each after its listed size is checked (:class:`OversizedArtifact` otherwise), so a
    hostile store cannot fill the disk or the memory of whoever verifies; the verifier checks the
    downloaded files again as it reads them.
    """
    if not version.tags.get("attestation_uid"):
        raise LookupError(f"{version.name} v{version.version} has no attestation")
    if limits is None:
        return Path(client.download_artifacts(version.run_id, "attestation", str(dest)))
    folder = dest / "attestation"
    folder.mkdir(parents=True, exist_ok=True)
    for info in client.list_artifacts(version.run_id, "attestation"):
        name = info.path.rsplit("/", 1)[-1]
        if info.is_dir or name not in limits:
            continue  # never opened by the verifier: not downloaded
        if info.file_size is not None and info.file_size > limits[name]:
            raise OversizedArtifact(f"attestation/{name}: {info.file_size:,} bytes, over its limit of {limits[name]:,} (MAX_FILE_BYTES); not downloaded")
        with tempfile.TemporaryDirectory(dir=dest) as tmp:
            Path(client.download_artifacts(version.run_id, info.path, tmp)).replace(folder / name)
    return folder


def champion_scores(tags: dict[str, str]) -> dict[str, Any] | None:
    """Held-out means in [0, 1] from a version's tags, which keep sums of quantized scores (B and C of
    docs/architecture.md#deltaone, each score × 10^6): mean = sum / (n × 10^6), rounded once to a float. The
    sums stay, named as sums. None when the version was not scored."""
    try:
        b, c, n = int(tags["baseline_score"]), int(tags["candidate_score"]), int(tags["eval_count"])
    except (KeyError, ValueError):
        return None
    if n <= 0:
        return None
    return {"baseline_mean": float(Fraction(b, n * SCALE)), "candidate_mean": float(Fraction(c, n * SCALE)), "eval_count": n,
            "baseline_sum_q": b, "candidate_sum_q": c}


def status(client: MlflowClient, spec: ProgramSpec) -> dict[str, Any]:
    """What a person asks first: which version serves, how it scored, when things last happened."""
    name = spec.registered_model_name
    versions = client.search_model_versions(f"name = '{name}'")
    current = champion(client, name)
    latest = max(versions, key=lambda v: int(v.version), default=None)
    attested = [v for v in versions if v.tags.get("attestation_uid")]
    last_attested = max(attested, key=lambda v: int(v.version), default=None)
    tags = current.tags if current is not None else {}
    return {
        "program": spec.name,
        "model": name,
        "versions": len(versions),
        "champion": int(current.version) if current is not None else None,
        "champion_window": tags.get("window"),
        "champion_delta_ppm": tags.get("delta_ppm"),
        "champion_scores": champion_scores(tags) if current is not None else None,
        "last_version": int(latest.version) if latest is not None else None,
        "last_run": latest.tags.get("dagster_run_id") if latest is not None else None,
        "last_attestation": last_attested.tags["attestation_uid"] if last_attested is not None else None,
        "attester": last_attested.tags.get("attester") if last_attested is not None else None,
        "last_window_end": window_end(latest.tags.get("window")) if latest is not None else None,
    }
