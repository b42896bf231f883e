"""``teleprompt``: what people do by hand — seed demo traffic, run the demo, verify a bundle."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from teleprompt_assets.settings import load_settings


def _seed(args: argparse.Namespace) -> int:
    from teleprompt_assets.programs import load_project
    from teleprompt_assets.registry import load_champion
    from teleprompt_assets.seed import seed_program
    from teleprompt_assets.tracking import connect

    settings = load_settings()
    _, specs = load_project(settings.config_path)
    spec = specs[args.program]
    champion = load_champion(connect(settings), spec)
    end = date.fromisoformat(args.end) if args.end else (datetime.now(timezone.utc) - timedelta(days=1)).date()
    report = seed_program(settings, spec, end, days=args.days, per_day=args.per_day, seed=args.seed, program=champion[0] if champion else None)
    print(f"seeded {report.traces} traces ({report.labeled} with ground truth) for {report.program} over {report.days[0]}..{report.days[-1]}"
          f" using {'champion v' + champion[1].version if champion else 'the uncompiled program'}")
    return 0


def _registered_hash(bundle: Path) -> str | None:
    """programHash of the model version the bundle attests, read from the configured MLflow store."""
    from teleprompt_assets.attest import SCHEMA
    from teleprompt_assets.eas import decode_data
    from teleprompt_assets.tracking import connect

    message = json.loads((bundle / "attestation.json").read_text())["message"]
    data = decode_data(SCHEMA, message["data"])
    version = connect(load_settings()).get_model_version(f"teleprompt-{data['program']}", str(data["modelVersion"]))
    return version.tags.get("program_hash")


def _verify(args: argparse.Namespace) -> int:
    from mlflow.exceptions import MlflowException

    from teleprompt_assets.addresses import AddressError
    from teleprompt_assets.attest import default_domain, verify_bundle

    try:
        domain = default_domain()
    except AddressError as exc:
        print(f"configuration: {exc}", file=sys.stderr)
        return 2
    bundle = Path(args.bundle)
    registered = None
    if not args.offline:
        try:
            registered = _registered_hash(bundle)
        except (MlflowException, OSError, KeyError, ValueError) as exc:
            print(f"FAIL registry: cannot read the attested model version ({type(exc).__name__}); use --offline to skip this check")
            return 1
    problems = verify_bundle(bundle, expected_signer=args.signer, registered_program_hash=registered, expected_domain=domain)
    if problems:
        for problem in problems:
            print(f"FAIL {problem}")
        return 1
    uid = json.loads((Path(args.bundle) / "attestation.json").read_text())["uid"]
    checked = "program hash (bundle" + (" and registered model)" if registered else ")")
    print(f"OK {uid}: signature, uid, roots, DeltaOne arithmetic and {checked} verify")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from teleprompt_assets.lm import build_lm
    from teleprompt_assets.programs import load_project
    from teleprompt_assets.registry import RollbackError, rollback
    from teleprompt_assets.tracking import connect

    settings = load_settings()
    spec = load_project(settings.config_path)[1][args.program]
    try:
        done = rollback(connect(settings), spec, build_lm(), args.to, args.reason)
    except RollbackError as exc:
        print(f"rollback refused: {exc}", file=sys.stderr)
        return 1
    print(f"{done.name}: champion v{done.from_version} -> v{done.to_version} (validated: loads and runs)")
    return 0


def _proof(args: argparse.Namespace) -> int:
    import tempfile

    from teleprompt_assets import registry
    from teleprompt_assets.merkle import StandardMerkleTree
    from teleprompt_assets.programs import load_project
    from teleprompt_assets.tracking import connect

    settings = load_settings()
    spec = load_project(settings.config_path)[1][args.program]
    client = connect(settings)
    version = client.get_model_version(spec.registered_model_name, str(args.version)) if args.version else registry.champion(client, spec.registered_model_name)
    if version is None:
        print(f"{spec.registered_model_name} has no champion; pass --version", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        try:
            bundle = registry.download_attestation(client, version, Path(tmp))
        except LookupError as exc:
            print(str(exc), file=sys.stderr)
            return 1
        dump = json.loads((bundle / "rewards_tree.json").read_text())
        attestation = json.loads((bundle / "attestation.json").read_text())
    tree = StandardMerkleTree.load(dump)
    for index, value in tree.entries():
        if value[0].lower() == args.address.lower():
            print(json.dumps({
                "program": spec.name, "modelVersion": int(version.version), "attestationUid": attestation["uid"],
                "rewardsRoot": tree.root, "leafEncoding": dump["leafEncoding"], "account": args.address,
                "weightPpm": int(value[1]), "proof": tree.get_proof(index),
            }, indent=2))
            return 0
    print(f"{args.address} has no reward weight in {spec.registered_model_name} v{version.version}", file=sys.stderr)
    return 1


def _submit(args: argparse.Namespace) -> int:
    import os

    from teleprompt_assets.keys import AttesterKeyError, load_attester
    from teleprompt_assets.onchain import OnchainError, submit_delegated

    try:
        attester = load_attester(load_settings().home)
    except AttesterKeyError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    if attester.is_dev:
        print(f"warning: submitting with the DEVELOPMENT attester key {attester.address}", file=sys.stderr)
    relayer = os.environ.get("TELEPROMPT_RELAYER_KEY") or None
    try:
        result = submit_delegated(Path(args.bundle), args.rpc, attester.private_key(), relayer, args.eas,
                                  ref_uid=args.ref_uid, deadline_s=args.deadline or None)
    except OnchainError as exc:
        print(f"submit failed: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


def _status(args: argparse.Namespace) -> int:
    from datetime import date as _date

    from teleprompt_assets import registry
    from teleprompt_assets.programs import load_project
    from teleprompt_assets.traces import count_by_day
    from teleprompt_assets.tracking import connect, experiment_id

    settings = load_settings()
    client = connect(settings)
    today = datetime.now(timezone.utc).date()
    infos = []
    for spec in load_project(settings.config_path)[1].values():
        info = registry.status(client, spec)
        since = _date.fromisoformat(info["last_window_end"]) + timedelta(days=1) if info["last_window_end"] else today - timedelta(days=6)
        days = [(since + timedelta(days=i)).isoformat() for i in range((today - since).days + 1)] if since <= today else []
        info["pending_traces"] = sum(count_by_day(client, experiment_id(client, settings, spec.config.experiment), days).values())
        infos.append(info)
    print(json.dumps(infos, indent=2) if args.json else "\n\n".join("\n".join(f"{k:20} {v}" for k, v in i.items()) for i in infos))
    return 0


def _run(args: argparse.Namespace) -> int:
    import os

    import dagster as dg

    from teleprompt_assets.defs.demo import ensure_dagster_home, run_programs
    from teleprompt_assets.programs import load_project

    settings = load_settings()
    ensure_dagster_home(settings.dagster_home)
    os.environ.setdefault("DAGSTER_HOME", str(settings.dagster_home))
    day = args.date or (datetime.now(timezone.utc) - timedelta(days=1)).date().isoformat()
    programs = args.program or sorted(load_project(settings.config_path)[1])
    with dg.DagsterInstance.get() as instance:
        try:
            outputs = run_programs(programs, day, instance)
        except (RuntimeError, ValueError) as exc:
            print(f"{', '.join(programs)} {day}: {exc}", file=sys.stderr)
            return 1
    for program, out in outputs.items():
        report = out["evaluation_report"]["comparison"]
        reg = out["registered_version"] | {"champion": (out.get("champion_alias") or {}).get("champion", False)}
        att = out["deltaone_attestation"]
        print(f"{program} {day}: run {out['run_id']}; deltaPpm {report['delta_ppm']}, DeltaOne {'yes' if report['deltaone'] else 'no'}; "
              f"{reg['name']} v{reg['version']}{' @champion' if reg['champion'] else ''}; "
              + (f"attestation {att['uid']}" if att.get("attested") else f"no attestation ({att['reason']})"))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from teleprompt_assets.defs.demo import demo

    summaries = demo(load_settings(), days=args.days, per_day=args.per_day)
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
    measured = "exact match with ground truth" if method["kind"] != "outcome_model" else f"predicted {method['model']['outcome']} (outcome model, dev Brier {method['calibration_dev'].get('brier', float('nan')):.3f})"
    lines = [
        "",
        f"teleprompt demo — {summary['program']}, partition {summary['day']} (window {summary['window'][0]}..{summary['window'][-1]})",
        f"  traffic           {seeded}; pipeline {summary['pipeline_seconds']:.1f} s (Dagster run {out['run_id']})",
        f"  traces            read {len(out['raw_traces'])}, accepted {len(out['curated_traces'])}, quarantined {len(out['quarantined_traces'])} (this day)",
        f"  training window   {len(out['training_set'])} rows after dedupe",
        f"  metric            {measured}",
        f"  held-out score    baseline v{out['evaluation_report']['baseline_version']} {report['baseline_mean']:.4f} -> candidate {report['candidate_mean']:.4f} on {report['n']} examples",
        f"  deltaPpm          {report['delta_ppm']} (95% CI low {report['ci_low_ppm']} ppm)",
        f"  DeltaOne          {'yes' if report['deltaone'] else 'no'}",
        f"  model version     {reg['name']} v{reg['version']}{' @champion' if reg['champion'] else ' (not champion)'}",
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


def _address(value: str) -> str:
    """argparse type: an EIP-55 checksummed address, refused before the command runs (exit 2)."""
    from teleprompt_assets.addresses import AddressError, checksummed

    try:
        return checksummed(value, "address")
    except AddressError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("address: ")) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="teleprompt", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    seed = sub.add_parser("seed", help="log synthetic labeled production traffic into MLflow")
    seed.add_argument("--program", default="ticket_router")
    seed.add_argument("--days", type=int, default=7)
    seed.add_argument("--per-day", type=int, default=40)
    seed.add_argument("--end", help="last day (YYYY-MM-DD, UTC); default yesterday")
    seed.add_argument("--seed", type=int, default=0)
    seed.set_defaults(func=_seed)
    verify = sub.add_parser("verify", help="verify an attestation bundle end to end")
    verify.add_argument("bundle")
    verify.add_argument("--signer", type=_address, help="expected attester address (EIP-55 checksummed)")
    verify.add_argument("--offline", action="store_true", help="skip the check against the registered model version")
    verify.set_defaults(func=_verify)
    proof = sub.add_parser("proof", help="a contributor's reward weight and Merkle proof, for a claim contract")
    proof.add_argument("address", type=_address, help="the contributor's EIP-55 checksummed address")
    proof.add_argument("--program", default="ticket_router")
    proof.add_argument("--version", type=int, help="model version (default: the champion)")
    proof.set_defaults(func=_proof)
    submit = sub.add_parser("submit", help="land a bundle's attestation on an EAS contract (attestByDelegation)")
    submit.add_argument("bundle")
    submit.add_argument("--rpc", required=True, help="JSON-RPC URL of the chain (never printed)")
    submit.add_argument("--eas", required=True, type=_address, help="EAS contract address on that chain (EAS >= 1.3.0, EIP-55 checksummed)")
    submit.add_argument("--ref-uid", help="on-chain uid to reference instead of the bundle's refUID (0x00…00 to drop it)")
    submit.add_argument("--deadline", type=int, default=3600, help="seconds the signed request stays valid (0: no deadline)")
    submit.set_defaults(func=_submit)
    status = sub.add_parser("status", help="per program: champion, its scores, last run, last attestation, pending traces")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_status)
    run = sub.add_parser("run", help="optimize programs for one day now, in one run (the job and executor the schedule uses)")
    run.add_argument("--program", action="append", help="a program to run (repeat for several; default: every registered program)")
    run.add_argument("--date", help="partition day YYYY-MM-DD (default: yesterday, UTC)")
    run.set_defaults(func=_run)
    back = sub.add_parser("rollback", help="move a program's champion back to an earlier, validated version")
    back.add_argument("program")
    back.add_argument("--to", type=int, help="version to restore (default: the one the champion replaced)")
    back.add_argument("--reason", default="manual rollback")
    back.set_defaults(func=_rollback)
    demo = sub.add_parser("demo", help="seed a week of traffic and run the whole graph for the latest day")
    demo.add_argument("--days", type=int, default=7)
    demo.add_argument("--per-day", type=int, default=40)
    demo.set_defaults(func=_demo)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
