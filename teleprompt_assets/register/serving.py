"""Serving the champion from an application: the program comes from the registry, the LM from the app.

A registered version carries the program (demos, instructions) and none of the pipeline's DSPy
settings, so an application configures its own LM with ``dspy.configure(lm=...)``, before or after
loading, and loading never replaces it. ``load_champion`` is the checked way to load: it reads the
``champion`` alias, finds what vouches for that version (its signed attestation, else the hash it was
registered with), checks every artifact the version serves against it, and builds the program from
the verified JSON state: nothing is unpickled (docs/security.md). See docs/serving.md.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import dspy
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

# The one import of a later stage (pyproject.toml, import-linter): to vouch for what it loads, the app's
# entry point reads the version's signed attestation, which only attest can check.
from teleprompt_assets.attest import bundles
from teleprompt_assets.core.addresses import checksummed
from teleprompt_assets.core.settings import load_settings
from teleprompt_assets.core.spec import ProgramSpec, load_project, model_name
from teleprompt_assets.register import registry
from teleprompt_assets.register.artifacts import TamperedArtifact, UntrustedModelSource


@dataclass(frozen=True)
class Served:
    program: dspy.Module
    model: str
    version: int
    vouched_by: str  # what the loaded state was checked against: "attestation <uid> by <attester>" or "registered program_hash"


def vouched_hash(client: MlflowClient, spec: ProgramSpec, version: ModelVersion, attester: str | None = None) -> tuple[str, str]:
    """The programHash ``version``'s artifacts must have, and what vouches for it.

    A version with an attestation: the ``programHash`` its signed attestation names, once the
    signature holds for the pinned EAS domain (and ``attester``, when given) and the attestation is
    for this program and version. A version without one: its registered ``program_hash``, which vouches
    only as much as whoever can write the registry; with ``attester`` such a version is refused.
    """
    label = f"{version.name} v{version.version}"
    if not version.tags.get("attestation_uid"):
        if attester is not None:
            raise UntrustedModelSource(f"{label} has no attestation, and only versions attested by {attester} are loaded; not loaded")
        registered = version.tags.get("program_hash")
        if not registered:
            raise TamperedArtifact(f"{label}: no attestation and no registered program_hash vouch for its artifacts; not loaded")
        return registered.lower(), "registered program_hash"
    with tempfile.TemporaryDirectory(prefix="teleprompt-serve-") as tmp:
        try:
            folder = registry.download_attestation(client, version, Path(tmp), bundles.MAX_FILE_BYTES)
            attested = bundles.attested_program(folder, expected_signer=attester)
        except (ValueError, MlflowException, OSError) as exc:
            raise TamperedArtifact(f"attestation/ ({label}): {exc}; not loaded") from None
    if (attested.program, attested.model_version) != (spec.name, int(version.version)):
        raise TamperedArtifact(f"attestation/ ({label}): attests {attested.program} v{attested.model_version}, not this version; not loaded")
    return attested.program_hash, f"attestation {version.tags['attestation_uid']} by {attested.attester}"


def load_champion(program: str, lm: dspy.BaseLM | None = None, client: MlflowClient | None = None, attester: str | None = None) -> Served:
    """The version ``champion`` points at for ``program`` (its name in ``teleprompt.yaml``), ready to call.

    The version's ``program_state.json`` must hash to what vouches for it (:func:`vouched_hash`) and
    its ``model.pkl`` must be that program's pickle, checked without unpickling it; the program is then
    built from its class in ``teleprompt.yaml`` and the verified JSON. A swapped artifact raises
    :class:`~teleprompt_assets.register.artifacts.TamperedArtifact`, one line naming it. Pass
    ``attester`` (the operator's published address, EIP-55) to load only versions its key attested.

    Without ``lm`` the program calls whatever LM DSPy is configured with when it runs. With one,
    that LM is bound to the program's predictors: for an app serving several programs on different
    LMs, or calling from threads that cannot reconfigure DSPy. DSPy's global settings are left as
    they were. The store is the pipeline's (``MLFLOW_TRACKING_URI``, else
    ``$TELEPROMPT_HOME/mlflow.db``) unless ``client`` names another; MLflow's tracking and registry
    URIs are left as the app set them.
    """
    settings = load_settings()
    if attester is not None:
        attester = checksummed(attester, "attester")
    specs = load_project(settings.config_path)[1]
    if program not in specs:
        raise LookupError(f"{program} is not a program of {settings.config_path}; pass one of {', '.join(sorted(specs))}")
    spec = specs[program]
    client = client or MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.registry_uri)
    name = model_name(program)
    version = registry.champion(client, name)
    if version is None:
        raise LookupError(f"{name} has no champion yet: `teleprompt run` registers and promotes one (`teleprompt status` shows it)")
    expected, vouched_by = vouched_hash(client, spec, version, attester)
    module = registry.load_registered_model(client, spec, version, expected, settings.pipeline_experiment)
    if lm is not None:
        module.set_lm(lm)
    return Served(module, name, int(version.version), vouched_by)
