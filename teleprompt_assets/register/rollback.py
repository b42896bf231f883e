"""Rollback: move ``champion`` back to a version that served before, after validating it.

A rollback is the operator's move, not a run's: it may only go back (to an older version that was
champion once), unless forced, and it validates the target (its artifacts are what was registered,
and it answers its recorded sample) before recording the event and moving the alias last
(docs/architecture.md#model-registry).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime

import dspy
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from teleprompt_assets.core.spec import ProgramSpec
from teleprompt_assets.register.artifacts import UntrustedModelSource
from teleprompt_assets.register.locks import registration_lock
from teleprompt_assets.register.registry import (
    CHAMPION,
    SAMPLE_ARTIFACT,
    _default_lock_dir,
    absent,
    champion,
    load_registered_model,
    small_json,
    trusted_model_uri,
)


class RollbackError(RuntimeError):
    """The rollback cannot proceed; the champion is left where it was."""


class RollbackRefused(RollbackError):
    """What was asked is not a rollback the rules allow (nothing to roll back, no such version, not
    back, never served): a wrong input, refused before anything is loaded or recorded."""


@dataclass(frozen=True)
class Rollback:
    name: str
    from_version: int
    to_version: int
    warnings: tuple[str, ...] = ()


def smoke_test(client: MlflowClient, spec: ProgramSpec, version: ModelVersion, lm: dspy.LM) -> None:
    """The version's artifacts are what was registered (:func:`load_registered_model`) and its
    program answers its recorded sample input with ``lm``."""
    try:
        model = load_registered_model(client, spec, version)
    except UntrustedModelSource as exc:
        raise RollbackError(str(exc)) from exc
    with tempfile.TemporaryDirectory() as tmp:
        try:
            sample = small_json(client, version.run_id, SAMPLE_ARTIFACT, tmp)
        except (MlflowException, OSError, ValueError) as exc:
            raise RollbackError(f"version {version.version} has no readable {SAMPLE_ARTIFACT} to validate with") from exc
    if not isinstance(sample, dict):
        raise RollbackError(f"version {version.version}: {SAMPLE_ARTIFACT} is not a JSON object")
    with dspy.context(lm=lm):
        prediction = model(**sample)
    missing = [f for f in spec.output_fields if getattr(prediction, f, None) in (None, "")]
    if missing:
        raise RollbackError(f"version {version.version} loaded but returned no {', '.join(missing)}")


def served(version: ModelVersion) -> bool:
    """It was champion once: promoted by a run, or restored by an earlier rollback."""
    return bool(version.tags.get("promoted_at") or version.tags.get("restored_at"))


def _objections(target: ModelVersion, current: ModelVersion) -> list[str]:
    """Why moving ``champion`` from ``current`` to ``target`` is not rolling back."""
    found = []
    if int(target.version) > int(current.version):
        found.append(f"rollback moves back; v{target.version} is newer than the champion v{current.version}")
    if not served(target):
        found.append(f"{target.name} v{target.version} never served ({_why_not_served(target.tags)})")
    return found


def _why_not_served(tags: dict[str, str]) -> str:
    """A blocked regression stops the run before promotion is decided, so it leaves no ``promotion_refused``."""
    if tags.get("promotion_refused"):
        return tags["promotion_refused"]
    try:
        b, c = int(tags["baseline_score"]), int(tags["candidate_score"])
    except (KeyError, ValueError):
        return "it was never champion"
    return f"failed no_regression: C={c} < B={b}" if c < b else "it was never champion"


def rollback(client: MlflowClient, spec: ProgramSpec, lm: dspy.LM, to_version: int | None = None, reason: str = "manual rollback",
             force: bool = False) -> Rollback:
    """Move ``champion`` back to ``to_version`` (default: the version the current champion replaced).

    Back means to a version that served before (promoted, or restored by a rollback) and is older
    than the champion: a version that never served may have failed its gates, and a newer one is a
    promotion, which runs decide. ``force`` overrides both, with a warning recorded in the target's
    ``forced`` tag. A version from outside the pipeline's artifact store is refused whatever
    ``force`` says. The target is validated (it loads and runs); then both versions record the event
    in their tags, and only then does the alias move.
    """
    name = spec.registered_model_name
    current = champion(client, name)
    if current is None:
        raise RollbackRefused(f"{name} has no champion to roll back")
    target_number = to_version if to_version is not None else int(current.tags.get("previous_champion", "0") or 0)
    if not target_number:
        raise RollbackRefused(f"{name} v{current.version} replaced no earlier champion; pass --to VERSION")
    if target_number == int(current.version):
        raise RollbackRefused(f"{name} v{target_number} is already the champion")
    try:
        target = client.get_model_version(name, str(target_number))
    except MlflowException as exc:
        if not absent(exc):
            raise
        raise RollbackRefused(f"{name} has no version {target_number}") from exc
    try:
        trusted_model_uri(client, target)
    except UntrustedModelSource as exc:
        raise RollbackError(str(exc)) from exc
    objections = _objections(target, current)
    if objections and not force:
        raise RollbackRefused("; ".join(objections) + "; pass --force to move it anyway")
    warnings = ("forced: " + "; ".join(objections),) if objections else ()
    smoke_test(client, spec, target, lm)
    # Under the promotion lock, as promotions move the alias: a run promoting meanwhile (on any host,
    # with TELEPROMPT_LOCK_URL) either finished first, and the champion check below sees it, or waits.
    with registration_lock(_default_lock_dir(), name, CHAMPION):
        now_serving = champion(client, name)
        if now_serving is None or now_serving.version != current.version:
            raise RollbackRefused(f"{name}: the champion moved to v{now_serving.version if now_serving else '-'} while v{target_number} was "
                                  f"being checked; look at `teleprompt status` and run the rollback again")
        now = datetime.now(UTC).isoformat(timespec="seconds")
        # Record first, move last: a crash in between leaves the old champion serving with the rollback
        # on record (it is never re-promoted), and repeating the command completes the move.
        client.set_model_version_tag(name, str(current.version), "rolled_back_at", now)
        client.set_model_version_tag(name, str(current.version), "rollback_reason", reason)
        if warnings:
            client.set_model_version_tag(name, str(target_number), "forced", warnings[0])
        client.set_model_version_tag(name, str(target_number), "restored_at", now)
        client.set_model_version_tag(name, str(target_number), "restored_from", str(current.version))
        client.set_registered_model_alias(name, CHAMPION, str(target_number))
    return Rollback(name, int(current.version), target_number, warnings)
