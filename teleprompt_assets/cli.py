"""``teleprompt``: what people do by hand — seed demo traffic, run the pipeline, verify a bundle.

A wrong input (a config that does not load, an unknown program, a day outside the partitions, a
missing bundle, a malformed number, address or URL) is reported as one line naming the input and
the fix, with exit status 2, before anything runs. By default a command prints its progress and
result only; ``--verbose`` lets the libraries speak (Dagster's event log, MLflow's logs, warnings,
progress bars).
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from teleprompt_assets.core.settings import Settings, SettingsError, executor_setting, load_settings

if TYPE_CHECKING:
    import dagster as dg
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from teleprompt_assets.attest.eas import EasDomain
    from teleprompt_assets.core.config import ProjectConfig
    from teleprompt_assets.core.spec import ProgramSpec

# What the libraries print unless --verbose: every warning (Dagster's Beta/Preview warnings, MLflow's
# and pydantic's deprecations) in this process and in the step processes it starts, MLflow's INFO
# and WARNING logs, MLflow's artifact download bars and tqdm's (DSPy's optimizers) progress bars.
QUIET_ENV = {
    "PYTHONWARNINGS": "ignore",
    "MLFLOW_LOGGING_LEVEL": "ERROR",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "TQDM_DISABLE": "1",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",  # "🏃 View run … at:" per run ended, with a tracking server
}
# Dagster's console logger prints every event at DEBUG; warnings and errors (alerts, failures) stay.
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}  # the event log keeps everything; the CLI prints its own line per outcome
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_BYTES32 = re.compile(r"^0x[0-9a-fA-F]{64}$")


class UsageError(Exception):
    """A wrong input; the message names the input and how to fix it (exit status 2, nothing runs)."""


class _Parser(argparse.ArgumentParser):
    """argparse's errors as one line (its default prints the usage block first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


@contextmanager
def _quiet(verbose: bool) -> Iterator[None]:
    """Silence the libraries for one command unless ``verbose``.

    The variables reach the step processes, which the multiprocess executor forks from a server this
    process starts; one the user has set is left as it is, and all are restored afterwards, so an
    in-process caller (tests) keeps its environment.
    """
    if verbose:
        yield
        return
    saved = {name: os.environ.get(name) for name in QUIET_ENV}
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# --- inputs ----------------------------------------------------------------------------------------

def _day(value: str) -> date:
    """argparse type: a day in the one form the help and the partitions use (``date.fromisoformat``
    alone also takes 20261205 or 2026-W49-6)."""
    try:
        if _DAY.match(value):
            return date.fromisoformat(value)
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"{value!r} is not a day; write it YYYY-MM-DD (UTC)")


def _count(least: int, most: int | None = None) -> Callable[[str], int]:
    """argparse type: a whole number from ``least`` (to ``most``); argparse's own message would name
    the function, not the fix."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            number = least - 1
        if number < least:
            raise argparse.ArgumentTypeError(f"{value!r} is not a whole number >= {least}")
        if most is not None and number > most:
            raise argparse.ArgumentTypeError(f"{value!r} is more than {most:,}; pass a whole number from {least} to {most:,}")
        return number

    return parse


# Days of synthetic traffic one command seeds: ten years. More has no use (the window is at most 366
# days) and went past the calendar: 100,000,000 days back from 2026 is before year 1.
MAX_SEED_DAYS = 3660


def _bundle(value: str) -> Path:
    """An existing folder (its contents are the verifier's business). Checked by the command, after
    argparse, so that a malformed address or number is reported first: it needs no file system."""
    path = Path(value)
    if not path.exists():
        raise UsageError(f"bundle {value}: no such folder; pass an attestation bundle folder, e.g. $TELEPROMPT_HOME/outbox/<program>/<uid>")
    if not path.is_dir():
        raise UsageError(f"bundle {value}: not a folder; pass the bundle's folder, not a file in it")
    return path


def _bytes32(value: str) -> str:
    if not _BYTES32.match(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a 0x-prefixed 32-byte hex uid (66 characters)")
    return value


def _address(value: str) -> str:
    """argparse type: an EIP-55 checksummed address, refused before the command runs (exit 2)."""
    from teleprompt_assets.core.addresses import AddressError, checksummed

    try:
        return checksummed(value, "address")
    except AddressError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("address: ")) from None


def _project(settings: Settings) -> tuple[ProjectConfig, dict[str, ProgramSpec]]:
    """The program registry, or a UsageError naming the file (and the entry and field) at fault."""
    import yaml

    from teleprompt_assets.core.config import ConfigError
    from teleprompt_assets.core.spec import load_project

    path = settings.config_path
    try:
        return load_project(path)
    except ConfigError as exc:
        raise UsageError(str(exc) if str(path) in str(exc) else f"config {path}: {exc}") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        raise UsageError(f"config {path}: not valid YAML{at} ({getattr(exc, 'problem', None) or type(exc).__name__}); "
                         "fix it or point TELEPROMPT_CONFIG at another file") from None
    except OSError as exc:
        raise UsageError(f"config {path}: cannot read it ({exc.strerror or type(exc).__name__}); point TELEPROMPT_CONFIG at a teleprompt.yaml") from None


def _program(settings: Settings, specs: dict[str, ProgramSpec], name: str | None, flag: str,
             pool: Sequence[str] | None = None, kinds: str = "programs") -> ProgramSpec:
    """``name``'s entry; omitted, the only candidate in ``pool`` (default: every program), so a
    config of one program needs no flag and a config of several never gets a silent default."""
    pool = sorted(specs) if pool is None else sorted(pool)
    config = settings.config_path
    if name is None:
        if len(pool) == 1:
            return specs[pool[0]]
        if not pool:
            raise UsageError(f"{flag}: {config} registers no {kinds}; add one to it or point TELEPROMPT_CONFIG at another file")
        raise UsageError(f"{flag} is required: {config} registers several {kinds}; pass one of {', '.join(pool)}")
    if name not in specs:
        raise UsageError(f"{flag} {name}: not registered in {config}; pass one of {', '.join(sorted(specs))}")
    if name not in pool:
        raise UsageError(f"{flag} {name}: not one of the {kinds}; " + (f"pass one of {', '.join(pool)}" if pool else f"{config} registers none"))
    return specs[name]


def _today() -> date:
    return datetime.now(UTC).date()


def _partition_day(day: date | None, project: ProjectConfig, flag: str, settings: Settings) -> date:
    """``day`` (default yesterday, UTC) if it is a daily partition: from the config's ``start_date``
    to yesterday, the last day that has ended."""
    today = _today()
    latest = today - timedelta(days=1)
    day = day or latest
    span = f"pick a day from {project.start_date} to {latest}"
    if day < project.start_date:
        raise UsageError(f"{flag} {day}: before start_date {project.start_date} in {settings.config_path}; {span}")
    if day > latest:
        when = "today" if day == today else "in the future"
        raise UsageError(f"{flag} {day}: {when} (UTC); a day is a partition once it has ended, so {span}")
    return day


def _domain() -> EasDomain:
    from teleprompt_assets.attest.bundles import default_domain
    from teleprompt_assets.core.addresses import AddressError

    try:
        return default_domain()
    except AddressError as exc:
        raise UsageError(f"configuration: {exc}") from None
    except ValueError:
        raise UsageError("configuration: TELEPROMPT_EAS_CHAIN_ID is not a whole number; set it to the chain id (Sepolia: 11155111)") from None


def _version(client: MlflowClient, spec: ProgramSpec, number: int) -> ModelVersion:
    from mlflow.exceptions import MlflowException

    from teleprompt_assets.register.registry import absent

    try:
        return client.get_model_version(spec.registered_model_name, str(number))
    except MlflowException as exc:
        if not absent(exc):
            raise
    latest = max((int(v.version) for v in client.search_model_versions(f"name = '{spec.registered_model_name}'")), default=0)
    raise UsageError(f"--version {number}: {spec.registered_model_name} has no version {number}; "
                     + (f"pass one from 1 to {latest}" if latest else "it has no versions yet (teleprompt run registers them)"))


# --- commands --------------------------------------------------------------------------------------

def _seed(args: argparse.Namespace) -> int:
    from teleprompt_assets.samples.seed import SEEDERS

    settings = load_settings()
    project, specs = _project(settings)
    spec = _program(settings, specs, args.program, "--program", [n for n in specs if n in SEEDERS],
                    "sample programs (the ones with demo traffic; an app logs its own)")
    end = _partition_day(args.end, project, "--end", settings)
    from teleprompt_assets.core.tracking import connect
    from teleprompt_assets.register.registry import load_champion
    from teleprompt_assets.samples.seed import seed_program

    champion = load_champion(connect(settings), spec)
    report = seed_program(settings, spec, end, days=args.days, per_day=args.per_day, seed=args.seed, program=champion[0] if champion else None)
    print(f"seeded {report.traces} traces ({report.labeled} with ground truth) for {report.program} over {report.days[0]}..{report.days[-1]}"
          f" using {f'champion v{champion[1].version}' if champion else 'the uncompiled program'}")
    return 0


def _registered_bundle(uri: str, dest: Path) -> tuple[Path, ModelVersion]:
    """The bundle stored with a model version (``models:/<name>/<version>`` or ``models:/<name>@<alias>``),
    downloaded from the tracking server: a host without the run's outbox verifies what the registry holds.
    Only the bundle's own files are downloaded, each after its size is checked (``MAX_FILE_BYTES``)."""
    from mlflow.exceptions import MlflowException

    from teleprompt_assets.attest.bundles import MAX_FILE_BYTES
    from teleprompt_assets.core.tracking import connect
    from teleprompt_assets.register.registry import download_attestation

    ref = uri.removeprefix("models:/")
    name, alias = ref.split("@", 1) if "@" in ref else (ref.rsplit("/", 1)[0], None)
    number = None if alias else ref.rsplit("/", 1)[-1] if "/" in ref else None
    if not name or not (alias or (number and number.isdigit())):
        raise UsageError(f"bundle {uri}: write models:/<name>/<version> or models:/<name>@<alias>, e.g. models:/teleprompt-ticket_router@champion")
    client = connect(load_settings())
    try:
        version = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, number)
    except MlflowException:
        raise UsageError(f"bundle {uri}: no such model version in {load_settings().tracking_uri}; `teleprompt status` lists them") from None
    try:
        return download_attestation(client, version, dest, MAX_FILE_BYTES), version
    except LookupError as exc:
        raise UsageError(f"bundle {uri}: {exc} (only DeltaOne versions are attested)") from None


def _verify(args: argparse.Namespace) -> int:
    if not args.bundle.startswith("models:/"):
        return _verify_folder(args, _bundle(args.bundle))
    import tempfile

    from teleprompt_assets.register.registry import OversizedArtifact

    with tempfile.TemporaryDirectory(prefix="teleprompt-verify-") as tmp:
        try:
            bundle, version = _registered_bundle(args.bundle, Path(tmp))
        except OversizedArtifact as exc:
            print(f"FAIL {exc}")
            return 1
        return _verify_folder(args, bundle, version)


def _registry_problems(bundle: Path, version: ModelVersion | None) -> list[str]:
    """What is wrong between a bundle that verifies and the model version it attests: the version's
    registered program_hash, its ``program_state.json`` (hashed) and its ``model.pkl`` (compared with
    the attested program's pickle, never unpickled), each against the attested programHash."""
    from teleprompt_assets.attest.bundles import attested_data, read_bundle_files
    from teleprompt_assets.core.spec import model_name
    from teleprompt_assets.core.tracking import connect
    from teleprompt_assets.register import artifacts, registry

    data = attested_data(bundle)
    if data is None:  # cannot happen for a bundle that verified; say so rather than pass
        return ["attestation: cannot be decoded to look up its model version"]
    settings = load_settings()
    client = connect(settings)
    program, number, attested = data["program"], int(data["modelVersion"]), "0x" + data["programHash"].hex()
    if version is None:
        version = client.get_model_version(model_name(program), str(number))
    elif (model_name(program), number) != (version.name, int(version.version)):
        return [f"registry: the bundle stored with {version.name} v{version.version} attests {model_name(program)} v{number}"]
    problems = []
    if str(version.tags.get("program_hash", "")).lower() != attested:
        problems.append("programHash: does not match the registered model version")
    specs = _project(settings)[1]
    if program not in specs:
        return problems + [f"registry: {program} is not a program of {settings.config_path}, so its artifacts cannot be "
                           "rebuilt and compared; add it, or use --offline to verify the bundle alone"]
    try:
        uri = registry.trusted_model_uri(client, version, settings.pipeline_experiment)
    except artifacts.UntrustedModelSource as exc:
        return problems + [str(exc)]
    files, _ = read_bundle_files(bundle, ("program.json",))
    reference = artifacts.read_state(files["program.json"], "program.json")  # the bundle verified: its program.json hashes to programHash
    return problems + artifacts.inspect_version(client, specs[program], version, attested, uri, reference).problems


def _verify_folder(args: argparse.Namespace, bundle: Path, version: ModelVersion | None = None) -> int:
    """The bundle first (nothing from the registry is read for a bundle that does not verify), then,
    unless ``--offline``, the model version it attests and the artifacts that version serves."""
    from teleprompt_assets.attest.bundles import read_bundle_json, verify_bundle

    problems = verify_bundle(bundle, expected_signer=args.signer, expected_domain=_domain())
    if not problems and not args.offline:
        from mlflow.exceptions import MlflowException  # --offline imports no MLflow

        try:
            problems = _registry_problems(bundle, version)
        except (MlflowException, OSError) as exc:
            print(f"FAIL registry: cannot read the attested model version ({type(exc).__name__}); use --offline to skip this check")
            return 1
    if problems:
        for problem in problems:
            print(f"FAIL {problem}")
        return 1
    uid = read_bundle_json(bundle, ("attestation.json",))[0]["attestation.json"]["uid"]
    checked = "program hash (bundle" + (")" if args.offline else " and registered model)")  # the registered model: its tag, state and pickle
    print(f"OK {uid}: signature, uid, roots, DeltaOne arithmetic and {checked} verify")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    settings = load_settings()
    spec = _program(settings, _project(settings)[1], args.program, "program")
    from teleprompt_assets.core.lm import build_lm
    from teleprompt_assets.core.tracking import connect
    from teleprompt_assets.register.rollback import RollbackError, RollbackRefused, rollback

    try:
        done = rollback(connect(settings), spec, build_lm(), args.to, args.reason, force=args.force)
    except RollbackRefused as exc:
        raise UsageError(f"--to {args.to}: {exc}" if args.to is not None else str(exc)) from None
    except RollbackError as exc:
        print(f"rollback refused: {exc}", file=sys.stderr)
        return 1
    for warning in done.warnings:
        _fail("rollback", f"warning: {warning}")
    print(f"{done.name}: champion v{done.from_version} -> v{done.to_version} (validated: loads and runs)")
    return 0


def _proof(args: argparse.Namespace) -> int:
    import tempfile

    settings = load_settings()
    project, specs = _project(settings)
    spec = _program(settings, specs, args.program, "--program")
    mix = project.rewards
    from teleprompt_assets.attest.bundles import MAX_FILE_BYTES, read_bundle_json
    from teleprompt_assets.attest.claims import UnreadableTree, claim_of
    from teleprompt_assets.core.tracking import connect
    from teleprompt_assets.register import registry

    client = connect(settings)
    version = _version(client, spec, args.version) if args.version else registry.champion(client, spec.registered_model_name)
    if version is None:
        print(f"{spec.registered_model_name} has no champion; pass --version", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        try:
            bundle = registry.download_attestation(client, version, Path(tmp), MAX_FILE_BYTES)
        except (LookupError, registry.OversizedArtifact) as exc:
            print(str(exc), file=sys.stderr)
            return 1
        docs, problems = read_bundle_json(bundle, ("rewards_tree.json", "attestation.json"))
        components = registry.reward_components(client, version, Path(tmp) / "components").get(args.address.lower())
    if problems:
        print(f"{spec.registered_model_name} v{version.version}: its bundle cannot be read: {problems[0]} (`teleprompt verify` checks it)", file=sys.stderr)
        return 1
    try:
        claim = claim_of(docs["rewards_tree.json"], args.address)
    except UnreadableTree as exc:
        print(f"{spec.registered_model_name} v{version.version}: rewards_tree.json is not a valid tree ({exc}); `teleprompt verify` checks it", file=sys.stderr)
        return 1
    if claim is None:
        print(f"{args.address} has no reward weight in {spec.registered_model_name} v{version.version}", file=sys.stderr)
        return 1
    why = {} if components is None else {"components": {
        "traces": components.get("traces"), "demos": components.get("demos"), "labelFactorPpm": components.get("label_factor_ppm"),
        "volumePpm": components.get("volume_ppm"), "qualityPpm": components.get("quality_ppm"), "impactPpm": components.get("impact_ppm"),
        "formula": f"weight = {mix.volume} volume + {mix.quality} quality + {mix.impact} impact, each a share of its component; at most {mix.cap} per address "
                   "(docs/attestations.md, Reward weights)",
    }}
    print(json.dumps({
        "program": spec.name, "modelVersion": int(version.version), "attestationUid": docs["attestation.json"]["uid"],
        "rewardsRoot": claim.rewards_root, "leafEncoding": list(claim.leaf_encoding), "account": args.address,
        "weightPpm": claim.weight_ppm, "proof": list(claim.proof), **why,
    }, indent=2))
    return 0


def _submit(args: argparse.Namespace) -> int:
    from teleprompt_assets.attest.evm import JsonRpc
    from teleprompt_assets.attest.keys import AttesterKeyError, load_attester
    from teleprompt_assets.attest.onchain import OnchainError, submit_delegated

    bundle = _bundle(args.bundle)
    if not (bundle / "attestation.json").is_file():
        raise UsageError(f"bundle {bundle}: no attestation.json in it; pass a bundle folder from $TELEPROMPT_HOME/outbox/<program>/<uid>")
    try:
        JsonRpc(args.rpc)  # checks the URL's form only; the URL itself is a secret and never printed
    except OnchainError as exc:
        raise UsageError(f"--rpc: {exc}") from None
    try:
        attester = load_attester(load_settings().home)
    except AttesterKeyError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    if attester.is_dev:
        print(f"warning: submitting with the DEVELOPMENT attester key {attester.address}", file=sys.stderr)
    relayer = os.environ.get("TELEPROMPT_RELAYER_KEY") or None
    try:
        result = submit_delegated(bundle, args.rpc, attester.private_key(), relayer, args.eas,
                                  ref_uid=args.ref_uid, deadline_s=args.deadline or None)
    except OnchainError as exc:
        print(f"submit failed: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


def _status(args: argparse.Namespace) -> int:
    settings = load_settings()
    specs = _project(settings)[1]
    from teleprompt_assets.core.tracking import connect, experiment_id
    from teleprompt_assets.ingest.traces import count_by_day
    from teleprompt_assets.register import registry

    client = connect(settings)
    today = _today()
    infos = []
    for spec in specs.values():
        info = registry.status(client, spec)
        since = date.fromisoformat(info["last_window_end"]) + timedelta(days=1) if info["last_window_end"] else today - timedelta(days=6)
        days = [(since + timedelta(days=i)).isoformat() for i in range((today - since).days + 1)] if since <= today else []
        info["pending_traces"] = sum(count_by_day(client, experiment_id(client, settings, spec.config.experiment), days).values())
        infos.append(info)
    print(json.dumps(infos, indent=2) if args.json else "\n\n".join(render_status(i) for i in infos))
    return 0


def render_status(info: dict) -> str:
    """One program's status, a field a line; scores as held-out means, with the sums they come from."""
    scores = info.get("champion_scores")
    shown = info | {"champion_scores": None if scores is None else (
        f"baseline {scores['baseline_mean']:.4f} -> candidate {scores['candidate_mean']:.4f}, means over {scores['eval_count']} held-out examples "
        f"(sums of quantized scores {scores['baseline_sum_q']} -> {scores['candidate_sum_q']})")}
    return "\n".join(f"{k:20} {v}" for k, v in shown.items())


def _run(args: argparse.Namespace) -> int:
    settings = load_settings()
    project, specs = _project(settings)
    programs = sorted({_program(settings, specs, name, "--program").name for name in args.program}) if args.program else sorted(specs)
    day = _partition_day(args.date, project, "--date", settings).isoformat()
    _domain()  # a bad TELEPROMPT_EAS_CONTRACT fails here, not in the run's last step
    executor_setting()  # likewise a bad TELEPROMPT_EXECUTOR, not the code server's load
    from teleprompt_assets.defs.partitions import contiguous

    groups = contiguous(list(specs), programs)
    if len(groups) != 1:
        raise UsageError(f"--program: one run takes neighbours in the sorted programs ({', '.join(sorted(specs))}); "
                         f"run {' and '.join(', '.join(g) for g in groups)} separately")

    from teleprompt_assets.launch import ensure_dagster_home, run_here, run_programs

    ensure_dagster_home(settings.dagster_home)
    os.environ.setdefault("DAGSTER_HOME", str(settings.dagster_home))
    here = len(programs) == 1 and not args.launch and executor_setting() == "multiprocess"
    print(f"optimizing {', '.join(programs)} for {day} in one Dagster run {'in this process' if here else 'launched'} (instance {settings.dagster_home})"
          + ("" if args.verbose else "; --verbose shows its event log"), file=sys.stderr, flush=True)
    started = time.perf_counter()
    run_config = None if args.verbose else QUIET_RUN_CONFIG
    with _instance(settings.dagster_home, args.verbose) as instance:
        try:
            outputs = run_here(programs[0], day, instance, run_config) if here else run_programs(programs, day, instance, run_config=run_config)
        except (RuntimeError, ValueError) as exc:
            print(f"{', '.join(programs)} {day}: {exc}", file=sys.stderr)
            return 1
    for program, out in outputs.items():
        print(run_line(program, day, out))
    print(f"done in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return 0


def _chosen(compiled: dict) -> str:
    """The teleprompter that made the candidate; under auto, with the best dev score it beat the others by."""
    chosen = (compiled.get("optimizer_chosen") or compiled.get("optimizer") or {}).get("name", "?")
    scored = [c for c in compiled.get("candidates") or [] if c.get("dev_score") is not None]
    if not scored:
        return chosen
    return f"{chosen} (auto: best of {len(scored)} on {scored[0]['dev_count']} dev examples, " + ", ".join(f"{c['optimizer']} {c['dev_score']:.2f}" for c in scored) + ")"


def _significance(report: dict) -> str:
    """Beside a gain: whether the bootstrap interval excludes zero (a gain of 4 -> 6 of 35 does not)."""
    low = report.get("ci_low_ppm")
    if report.get("candidate_sum", 0) <= report.get("baseline_sum", 0) or low is None or low > 0:
        return ""
    return f" (not significant: 95% CI low {low / 10_000:+.1f}%)"


def run_line(program: str, day: str, out: dict) -> str:
    """One line per program of a run: what it measured and what became of the candidate, with the
    reason whenever it was not promoted or not attested."""
    head = f"{program} {day}: run {out['run_id']}; "
    reg, alias, att = out["registered_version"], out.get("champion_alias") or {}, out["deltaone_attestation"]
    if "skipped" in reg:
        return head + reg["skipped"]
    report = out["evaluation_report"]["comparison"]
    serving = "@champion" if alias.get("champion") else f"(not champion: {alias.get('decision', 'not promoted')})"
    shortfall = (out.get("compiled_program") or {}).get("demo_shortfall") or []
    return (head + f"{report['baseline_mean']:.4f} -> {report['candidate_mean']:.4f} on {report['n']} held-out examples, deltaPpm {report['delta_ppm']}, "
            f"DeltaOne {'yes' if report['deltaone'] else 'no'}{_significance(report)}; {reg['name']} v{reg['version']} {serving}; "
            + (f"attestation {att['uid']}" if att.get("attested") else f"no attestation ({att['reason']})")
            + "".join(f"; fewer demos: {line}" for line in shortfall))


def _instance(home: Path, verbose: bool) -> dg.DagsterInstance:
    """The Dagster instance at ``home``; unless ``verbose``, with Python logs below INFO off.

    A step process announces itself at DEBUG through a console logger of its own that a run's
    config does not reach; only the instance's ``python_logs.python_log_level`` does. Dagster's
    events are stored whatever the level, and the project logs nothing at DEBUG, so the event log
    the UI shows keeps its content. The setting lives in this process only: dagster.yaml is left as
    the user wrote it, and a level set there wins.
    """
    import dagster as dg
    import yaml
    from dagster._core.instance.ref import InstanceRef

    if verbose:
        return dg.DagsterInstance.get()
    path = home / "dagster.yaml"
    python_logs = ((yaml.safe_load(path.read_text()) if path.exists() else None) or {}).get("python_logs") or {}
    overrides = {"python_logs": {"python_log_level": "INFO", **python_logs}}
    return dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home), overrides=overrides))


def _demo(args: argparse.Namespace) -> int:
    from teleprompt_assets.samples.seed import SEEDERS

    settings = load_settings()
    project, specs = _project(settings)
    if not set(specs) & set(SEEDERS):
        raise UsageError(f"{settings.config_path} registers none of the sample programs ({', '.join(SEEDERS)}) the demo seeds; "
                         "use the shipped teleprompt.yaml (unset TELEPROMPT_CONFIG)")
    if _today() - timedelta(days=1) < project.start_date:
        raise UsageError(f"start_date {project.start_date} in {settings.config_path} is after yesterday, the day the demo optimizes; set an earlier start_date")
    _domain()
    executor_setting()
    from teleprompt_assets.launch import demo, ensure_dagster_home

    ensure_dagster_home(settings.dagster_home)
    os.environ.setdefault("DAGSTER_HOME", str(settings.dagster_home))
    summaries = demo(settings, days=args.days, per_day=args.per_day, instance=_instance(settings.dagster_home, args.verbose),
                     run_config=None if args.verbose else QUIET_RUN_CONFIG)
    for summary in summaries:
        print(render_summary(summary))
    return 0 if all(s["outputs"]["deltaone_attestation"].get("verifies", True) for s in summaries) else 1


def render_summary(summary: dict) -> str:
    out = summary["outputs"]
    report = out["evaluation_report"]["comparison"]
    method = out["evaluation_report"]["evaluation_method"]
    reg = out["registered_version"] | {"champion": out.get("champion_alias", {}).get("champion", False)}
    att = out["deltaone_attestation"]
    seeded = f"seeded {summary['seeded']} traces in {summary['seed_seconds']:.1f} s" if summary["seeded"] else f"reused {summary['reused']} seeded traces"
    brier = method.get("calibration_dev", {}).get("brier", float("nan"))
    measured = "exact match with ground truth" if method["kind"] != "outcome_model" else f"predicted {method['model']['outcome']} (outcome model, dev Brier {brier:.3f})"
    lines = [
        "",
        f"teleprompt demo — {summary['program']}, partition {summary['day']} (window {summary['window'][0]}..{summary['window'][-1]})",
        f"  traffic           {seeded}; pipeline {summary['pipeline_seconds']:.1f} s (Dagster run {out['run_id']})",
        f"  traces            read {len(out['raw_traces'])}, accepted {len(out['curated_traces'])}, quarantined {len(out['quarantined_traces'])} (this day)",
        f"  training window   {len(out['training_set'])} rows after dedupe",
        f"  metric            {measured}",
        f"  held-out score    baseline v{out['evaluation_report']['baseline_version']} {report['baseline_mean']:.4f} -> candidate {report['candidate_mean']:.4f} on {report['n']} examples",
        f"  deltaPpm          {report['delta_ppm']} (95% CI low {report['ci_low_ppm']} ppm)",
        f"  DeltaOne          {'yes' if report['deltaone'] else 'no'}{_significance(report)}",
        f"  optimizer         {_chosen(out.get('compiled_program') or {})}",
        f"  model version     {reg['name']} v{reg['version']}{' @champion' if reg['champion'] else ' (not champion: ' + out['champion_alias']['decision'] + ')'}",
    ]
    if att.get("attested"):
        ok = att["verifies"] and not summary["bundle_problems"]
        lines += [
            f"  attestation uid   {att['uid']}",
            f"  bundle            {att['bundle']}",
            f"  verifies          {'yes' if ok else 'NO: ' + '; '.join(att['problems'] + (summary['bundle_problems'] or []))}",
        ]
    else:
        lines.append(f"  attestation       skipped: {att['reason']}")
    return "\n".join(lines)


def _fail(command: str, message: str) -> None:
    print(f"teleprompt {command}: {message}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", "-v", action="store_true", help="show the libraries' output: Dagster's event log, MLflow's logs, warnings")
    parser = _Parser(prog="teleprompt", description=(__doc__ or "").replace("``", ""), formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, parents=[common])

    seed = command("seed", "log synthetic labeled production traffic into MLflow")
    seed.add_argument("--program", help="a sample program (default: the only one the config registers)")
    seed.add_argument("--days", type=_count(1, MAX_SEED_DAYS), default=7, help=f"days of traffic, ending --end (1 to {MAX_SEED_DAYS:,})")
    seed.add_argument("--per-day", type=_count(1), default=40)
    seed.add_argument("--end", type=_day, help="last day (YYYY-MM-DD, UTC, from start_date to yesterday); default yesterday")
    seed.add_argument("--seed", type=_count(0), default=0)
    seed.set_defaults(func=_seed)
    verify = command("verify", "verify an attestation bundle end to end")
    verify.add_argument("bundle", help="the bundle's folder, or the model version it attests: models:/<name>/<version> or models:/<name>@<alias>")
    verify.add_argument("--signer", type=_address, help="expected attester address (EIP-55 checksummed)")
    verify.add_argument("--offline", action="store_true", help="skip the check against the registered model version")
    verify.set_defaults(func=_verify)
    proof = command("proof", "a contributor's reward weight and Merkle proof, for a claim contract")
    proof.add_argument("address", type=_address, help="the contributor's EIP-55 checksummed address")
    proof.add_argument("--program", help="default: the only program the config registers")
    proof.add_argument("--version", type=_count(1), help="model version (default: the champion)")
    proof.set_defaults(func=_proof)
    submit = command("submit", "land a bundle's attestation on an EAS contract (attestByDelegation)")
    submit.add_argument("bundle", help="the bundle's folder")
    submit.add_argument("--rpc", required=True, help="JSON-RPC URL of the chain (never printed)")
    submit.add_argument("--eas", required=True, type=_address, help="EAS contract address on that chain (EAS >= 1.3.0, EIP-55 checksummed)")
    submit.add_argument("--ref-uid", type=_bytes32, help="on-chain uid to reference instead of the bundle's refUID (0x00…00 to drop it)")
    submit.add_argument("--deadline", type=_count(0), default=3600, help="seconds the signed request stays valid (0: no deadline)")
    submit.set_defaults(func=_submit)
    status = command("status", "per program: champion, its scores, last run, last attestation, pending traces")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_status)
    run = command("run", "optimize programs for one day now, in one run (the job and executor the schedule uses)")
    run.add_argument("--program", action="append", help="a program to run (repeat for several; default: every registered program)")
    run.add_argument("--date", type=_day, help="partition day YYYY-MM-DD, UTC, from start_date to yesterday (default: yesterday)")
    run.add_argument("--launch", action="store_true",
                     help="launch the run from the code location, as the schedule does, also for one program "
                          "(one program otherwise runs in this process, steps one after another: seconds faster)")
    run.set_defaults(func=_run)
    back = command("rollback", "move a program's champion back to an earlier, validated version")
    back.add_argument("program")
    back.add_argument("--to", type=_count(1), help="an older version that served before (default: the one the champion replaced)")
    back.add_argument("--force", action="store_true", help="also to a version that never served, or a newer one (warns; recorded in its tags)")
    back.add_argument("--reason", default="manual rollback")
    back.set_defaults(func=_rollback)
    demo = command("demo", "seed a week of traffic and run the whole graph for the latest day")
    demo.add_argument("--days", type=_count(1, MAX_SEED_DAYS), default=7, help=f"days of traffic, ending yesterday (1 to {MAX_SEED_DAYS:,})")
    demo.add_argument("--per-day", type=_count(1), default=40)
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with _quiet(args.verbose):
        try:
            return args.func(args)
        except (UsageError, SettingsError) as exc:
            _fail(args.command, str(exc))
            return 2
        except Exception as exc:
            from mlflow.exceptions import MlflowException

            if not isinstance(exc, MlflowException):
                raise
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            _fail(args.command, f"MLflow: {first} (store: MLFLOW_TRACKING_URI, else $TELEPROMPT_HOME/mlflow.db)")
            return 1


def entry() -> NoReturn:
    """The ``teleprompt`` script: :func:`main`, then an exit that skips tearing down the interpreter.

    A process that imported dagster, mlflow and dspy spent ~1.2 s after its last line freeing ~3,000
    modules' objects (docs/performance.md#fixed-overhead), which nothing here needs: the exit handlers still
    run (logging's flush, MLflow's trace export), the streams are flushed, then the process ends. An
    error that escapes :func:`main` takes the ordinary way out."""
    code = main()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
