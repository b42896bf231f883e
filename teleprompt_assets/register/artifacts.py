"""What a registered version serves, checked against a program hash someone vouches for, without unpickling.

A version carries its program twice (docs/serving.md): ``program_state.json`` in the version's run
(JSON demos and instructions; its keccak256 is the attested ``programHash``) and the ``mlflow.dspy``
model (``MLmodel`` and the cloudpickled ``data/model.pkl``) that MLflow's loaders unpickle. Whoever
can write the artifact store can swap either. So before anything is built from a version:

- ``program_state.json`` is read behind a size and depth bound and hashed; it must be the hash the
  caller vouches for (the attested ``programHash`` where the version has an attestation, else the
  version's registered ``program_hash``);
- ``data/model.pkl`` is never unpickled: the program is rebuilt from that verified JSON, pickled
  here the way :func:`served_pickle` pickled it at registration, and the stored file must be the same
  pickle, operation by operation (pickletools reads opcodes, it runs none). Only the random
  identifiers cloudpickle and DSPy draw in each process may differ, each consistently;
- ``MLmodel`` must point MLflow's loaders at ``data/model.pkl`` through ``mlflow.dspy`` with no code
  folder, so ``mlflow.dspy.load_model`` loads what was checked and nothing else.

A problem is one line naming the artifact. :class:`TamperedArtifact` carries the first one.
"""

from __future__ import annotations

import os
import pickletools
import re
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import cloudpickle
import dspy
import mlflow
import yaml
from eth_utils import keccak
from mlflow import MlflowClient
from mlflow.dspy.wrapper import DspyModelWrapper
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types.schema import AnyType, ColSpec, Schema

from teleprompt_assets.core.encoding import canonical_bytes, loads_bounded
from teleprompt_assets.core.spec import ProgramSpec
from teleprompt_assets.optimize.teleprompters import load_state

STATE_ARTIFACT = "program_state.json"
MODEL_ARTIFACT = "program"
PICKLE_PATH = "data/model.pkl"
MLMODEL_PATH = "MLmodel"
MAX_STATE_BYTES = 64 << 20  # the bound on the bundle's program.json: the same bytes
MAX_MLMODEL_BYTES = 1 << 20
STATE_DEPTH = 64  # a DSPy state nests a handful of levels; a demo's values bring their own (inputs are bounded at curation)
PICKLE_SLACK_BYTES = 4096  # the random identifiers' digits may differ in length between processes

# What a version carries of DSPy's settings: only the key MLflow's loader reads. The LM, the adapter
# and everything else come from the application that loads it (docs/serving.md).
SERVED_DSPY_SETTINGS: dict[str, Any] = {"callbacks": []}
_MLFLOW_TYPES = {str: "string", bool: "boolean", int: "long", float: "double"}


class UntrustedModelSource(RuntimeError):
    """A version's artifacts are not the pipeline's, or not what was vouched for; nothing of them was unpickled."""


class TamperedArtifact(UntrustedModelSource):
    """An artifact of a version differs from what its attestation (or its registration) vouches for;
    the message is one line naming the artifact."""


def program_hash(state: dict[str, Any]) -> str:
    """keccak256 of the canonical JSON state: the programHash (docs/architecture.md#attestation-schema-and-bundle-files)."""
    return "0x" + keccak(canonical_bytes(state)).hex()


def _column_type(annotation: Any) -> str | AnyType:
    if get_origin(annotation) is Literal:
        kinds = {type(a) for a in get_args(annotation)}
        annotation = kinds.pop() if len(kinds) == 1 else None
    return _MLFLOW_TYPES.get(annotation) or AnyType()


def model_signature(spec: ProgramSpec) -> ModelSignature:
    """The program's inputs (its ``forward`` parameters) and outputs, typed as its predictors declare
    them, so a serving app (and MLflow's pyfunc) knows what to pass and what comes back."""
    declared: dict[str, Any] = {}
    for predictor in spec.build().predictors():
        for field_name, declared_field in predictor.signature.fields.items():
            declared.setdefault(field_name, declared_field.annotation)

    def columns(names: tuple[str, ...]) -> Schema:
        return Schema([ColSpec(_column_type(declared.get(n)), n) for n in names])

    return ModelSignature(inputs=columns(spec.input_fields), outputs=columns(spec.output_fields))


def served_pickle(program: dspy.Module, outputs: Schema | None) -> bytes:
    """``data/model.pkl`` of a version: the program in MLflow's wrapper, with only
    :data:`SERVED_DSPY_SETTINGS`. The registry writes it and the check rebuilds it with this one recipe."""
    wrapper = DspyModelWrapper(program, dict(SERVED_DSPY_SETTINGS))
    wrapper.output_schema = outputs
    return cloudpickle.dumps(wrapper)


# --- comparing a stored pickle with the one the verified state gives, statically --------------------

_HEX16 = re.compile(r"[0-9a-f]{16}")  # DSPy's per-predictor stage id
_HEX32 = re.compile(r"[0-9a-f]{32}")  # cloudpickle's class-tracking id
_REF = re.compile(r"([A-Za-z_][\w.]*):(\d{1,20})")  # pydantic's reference to a class, "module.Class:<id()>"


def _volatile_shape(value: Any) -> tuple[str, str] | None:
    """The kind of per-process random identifier ``value`` looks like, or None."""
    if not isinstance(value, str):
        return None
    if _HEX16.fullmatch(value):
        return ("hex16", "")
    if _HEX32.fullmatch(value):
        return ("hex32", "")
    found = _REF.fullmatch(value)
    return ("ref", found.group(1)) if found else None


def _strings(value: Any) -> Iterator[str]:
    """Every string in a JSON value, keys included (iteratively: the state may nest)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _operations(data: bytes) -> list[tuple[str, Any]]:
    """The pickle's opcodes and arguments, read by pickletools (which executes nothing); ``FRAME``
    lengths are left out (they follow from the rest)."""
    return [(op.name, arg) for op, arg, _ in pickletools.genops(data) if op.name != "FRAME"]


def pickle_difference(stored: bytes, expected: bytes, content: set[str]) -> str | None:
    """Why ``stored`` is not the pickle ``expected`` is, or None when it is.

    Equal means the same operations with the same arguments, except where ``expected`` holds a
    random identifier (a string shaped like one that is not text of the program state, ``content``):
    there ``stored`` must hold an identifier of the same shape, and the two must correspond one to
    one throughout, so unpickling either builds the same objects."""
    try:
        got = _operations(stored)
    except Exception:  # noqa: BLE001 - whatever pickletools refuses is not the program's pickle
        return "not a readable pickle"
    want = _operations(expected)
    if len(got) != len(want):
        return f"{len(got):,} pickle operations where the attested program's pickle has {len(want):,}"
    ours: dict[str, str] = {}
    theirs: dict[str, str] = {}
    for index, ((op_got, arg_got), (op_want, arg_want)) in enumerate(zip(got, want, strict=True)):
        shape = None if arg_want in content else _volatile_shape(arg_want)
        if shape is None:
            if (op_got, arg_got) != (op_want, arg_want):
                return f"operation {index:,} is {op_got} {_shown(arg_got)} where the attested program's pickle has {op_want} {_shown(arg_want)}"
            continue
        if op_got != op_want or _volatile_shape(arg_got) != shape or ours.setdefault(arg_want, arg_got) != arg_got \
                or theirs.setdefault(arg_got, arg_want) != arg_want:
            return f"operation {index:,} is {op_got} {_shown(arg_got)} where the attested program's pickle has a {shape[0]} identifier"
    return None


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "…"


# --- reading artifacts behind bounds --------------------------------------------------------------

def _read_bounded(path: Path, limit: int, what: str) -> bytes:
    """A downloaded file's bytes, refused over ``limit`` (checked with fstat, then while reading)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise TamperedArtifact(f"{what}: not a regular file")
        if info.st_size > limit:
            raise TamperedArtifact(f"{what}: {info.st_size:,} bytes, over its limit of {limit:,}; not read")
        chunks, size = [], 0
        while chunk := os.read(fd, min(1 << 20, limit + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise TamperedArtifact(f"{what}: grew past its limit of {limit:,} bytes while being read")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _listed_size(listing: list[Any], name: str) -> int | None:
    for info in listing:
        if info.path.rsplit("/", 1)[-1] == name and not info.is_dir:
            return info.file_size if info.file_size is not None else -1
    return None


def _run_artifact(client: MlflowClient, version: ModelVersion, name: str, limit: int, what: str) -> bytes:
    """A file of the version's run, its listed size checked before it is downloaded."""
    try:
        size = _listed_size(client.list_artifacts(version.run_id), name)
    except MlflowException as exc:
        raise TamperedArtifact(f"{what}: cannot list the version's run artifacts ({exc.error_code})") from None
    if size is None:
        raise TamperedArtifact(f"{what}: missing from the version's run")
    if size > limit:
        raise TamperedArtifact(f"{what}: {size:,} bytes, over its limit of {limit:,}; not downloaded")
    with tempfile.TemporaryDirectory(prefix="teleprompt-artifact-") as tmp:
        return _read_bounded(Path(client.download_artifacts(version.run_id, name, tmp)), limit, what)


def _model_artifact(client: MlflowClient, model_uri: str, relative: str, limit: int, what: str) -> bytes:
    """A file of the version's logged model, its listed size checked before it is downloaded."""
    folder, _, name = relative.rpartition("/")
    parent = model_uri.rstrip("/") + (f"/{folder}" if folder else "")
    try:
        size = _listed_size(mlflow.artifacts.list_artifacts(artifact_uri=parent, tracking_uri=client.tracking_uri), name)
    except (MlflowException, OSError) as exc:
        raise TamperedArtifact(f"{what}: cannot list the model's artifacts ({type(exc).__name__})") from None
    if size is None:
        raise TamperedArtifact(f"{what}: missing from the model's artifacts")
    if size > limit:
        raise TamperedArtifact(f"{what}: {size:,} bytes, over its limit of {limit:,}; not downloaded")
    with tempfile.TemporaryDirectory(prefix="teleprompt-artifact-") as tmp:
        path = mlflow.artifacts.download_artifacts(artifact_uri=f"{parent}/{name}", dst_path=tmp, tracking_uri=client.tracking_uri)
        return _read_bounded(Path(path), limit, what)


def read_state(body: bytes, what: str = STATE_ARTIFACT) -> dict[str, Any]:
    """A program state's JSON, parsed behind the size and depth bounds."""
    try:
        state = loads_bounded(body, max_depth=STATE_DEPTH, max_bytes=MAX_STATE_BYTES)
    except ValueError as exc:
        raise TamperedArtifact(f"{what}: not a program state ({str(exc)[:200]})") from None
    if not isinstance(state, dict):
        raise TamperedArtifact(f"{what}: not a program state (not a JSON object)")
    return state


def _loader_problem(body: bytes, what: str) -> str | None:
    """Why the ``MLmodel`` would make MLflow load anything but ``data/model.pkl`` through ``mlflow.dspy``."""
    try:
        model = yaml.safe_load(body.decode("utf-8"))
        flavors = model["flavors"]
        dspy_flavor, pyfunc = flavors["dspy"], flavors.get("python_function") or {}
    except Exception:  # noqa: BLE001 - an unreadable MLmodel loads nothing we checked
        return f"{what}: not an MLflow model description with a dspy flavor"
    if dspy_flavor.get("model_path") != PICKLE_PATH:
        return f"{what}: points the dspy loader at {_shown(dspy_flavor.get('model_path'))}, not {PICKLE_PATH}"
    if dspy_flavor.get("code") or pyfunc.get("code"):
        return f"{what}: adds a code folder to the loader's import path"
    if pyfunc and pyfunc.get("loader_module") != "mlflow.dspy":
        return f"{what}: names the pyfunc loader {_shown(pyfunc.get('loader_module'))}, not mlflow.dspy"
    return None


# --- the check --------------------------------------------------------------------------------------

@dataclass
class Inspection:
    """What :func:`inspect_version` found: the state when it is the vouched-for one, and every problem."""

    state: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)


def inspect_version(client: MlflowClient, spec: ProgramSpec, version: ModelVersion, expected_hash: str, model_uri: str | None,
                    reference_state: dict[str, Any] | None = None) -> Inspection:
    """Check ``version``'s ``program_state.json`` against ``expected_hash`` and its model (at
    ``model_uri``; None: not checked) against the program that state rebuilds. ``reference_state``
    (the bundle's ``program.json``, when the caller has verified it) lets the model be checked even
    when the version's own state fails. Nothing is unpickled."""
    label = f"{version.name} v{version.version}"
    found = Inspection()
    state_what = f"{STATE_ARTIFACT} ({label})"
    try:
        state = read_state(_run_artifact(client, version, STATE_ARTIFACT, MAX_STATE_BYTES, state_what), state_what)
        actual = program_hash(state)
        if actual != expected_hash.lower():
            found.problems.append(f"{state_what}: keccak256 is {actual}, not the vouched-for programHash {expected_hash.lower()}; "
                                  "it is not the program that was attested")
        else:
            found.state = state
    except TamperedArtifact as exc:
        found.problems.append(str(exc))
    reference = found.state if found.state is not None else reference_state
    if model_uri is None or reference is None or program_hash(reference) != expected_hash.lower():
        return found
    found.problems += model_problems(client, spec, label, model_uri, reference)
    return found


def model_problems(client: MlflowClient, spec: ProgramSpec, label: str, model_uri: str, state: dict[str, Any]) -> list[str]:
    """Why the ``mlflow.dspy`` model at ``model_uri`` would not load the program ``state`` describes."""
    problems = []
    mlmodel_what = f"{MODEL_ARTIFACT}/{MLMODEL_PATH} ({label})"
    try:
        problem = _loader_problem(_model_artifact(client, model_uri, MLMODEL_PATH, MAX_MLMODEL_BYTES, mlmodel_what), mlmodel_what)
    except TamperedArtifact as exc:
        problem = str(exc)
    if problem:
        problems.append(problem)
    pickle_what = f"{MODEL_ARTIFACT}/{PICKLE_PATH} ({label})"
    expected = served_pickle(load_state(spec, state), model_signature(spec).outputs)
    try:
        stored = _model_artifact(client, model_uri, PICKLE_PATH, len(expected) + PICKLE_SLACK_BYTES, pickle_what)
    except TamperedArtifact as exc:
        return problems + [str(exc)]
    difference = pickle_difference(stored, expected, set(_strings(state)))
    if difference is not None:
        problems.append(f"{pickle_what}: not the pickle of the attested program ({difference}); not unpickled")
    return problems


def verified_program(client: MlflowClient, spec: ProgramSpec, version: ModelVersion, expected_hash: str, model_uri: str | None) -> dspy.Module:
    """The program of ``version``, built from its JSON state once that state hashes to
    ``expected_hash`` and its model is that program's pickle; raises :class:`TamperedArtifact`
    naming the first artifact that is not."""
    found = inspect_version(client, spec, version, expected_hash, model_uri)
    if found.problems or found.state is None:
        raise TamperedArtifact(found.problems[0] if found.problems else f"{STATE_ARTIFACT} ({version.name} v{version.version}): not checked")
    return load_state(spec, found.state)
