"""The pipeline's promises under random sequences of what happens in production (issue 14).

A hypothesis state machine logs days of traffic (none, normal, or labelled so wrongly that the
candidate gets worse), runs days in any order (again, one or both programs per run) and rolls back;
after every step it checks what the product promises:
- the champion was only ever replaced by a version measured against it, on at least
  ``min_holdout`` held-out examples, scoring strictly above it;
- every version's MLflow run holds that version's own program state and bundle;
- one version per program, window and programHash; at most one attestation per version;
- every attestation in the outbox verifies.
Real parts: a sqlite MLflow store, a Dagster instance, the sample programs and the offline LM.
Two runs at once need two processes (Dagster runs in-process threads of one interpreter deadlock
on its stores); ``test_day_order`` starts two ``teleprompt run`` processes against one store.
"""

import json
import os
import random
import shutil
import tempfile
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import dspy
import yaml
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from teleprompt_assets.attest.bundles import verify_bundle
from teleprompt_assets.core.lm import offline_lm
from teleprompt_assets.core.settings import load_settings
from teleprompt_assets.core.spec import load_project
from teleprompt_assets.core.tracking import connect, experiment_id
from teleprompt_assets.definitions import OPTIMIZE_JOB, build_definitions
from teleprompt_assets.defs.partitions import run_tags
from teleprompt_assets.ingest.tracing import label_trace, traced_call
from teleprompt_assets.register import registry, rollback
from teleprompt_assets.samples.seed import day_start_ns, seed_program
from teleprompt_assets.samples.ticket_router import QUEUES
from teleprompt_assets.samples.ticket_traffic import tickets
from teleprompt_assets_tests.conftest import REPO, set_env

DAYS = [date(2026, 7, 10) + timedelta(days=i) for i in range(3)]
PROGRAMS = ["outreach_reply", "ticket_router"]
MIN_HOLDOUT = 8
PER_DAY = 16


def _config(path: Path) -> Path:
    config = yaml.safe_load((REPO / "teleprompt.yaml").read_text())
    config["window_days"] = 3
    for entry in config["programs"].values():
        entry["split"] = entry.get("split", {}) | {"min_holdout": MIN_HOLDOUT}
        entry["optimizer"]["params"] = {"max_bootstrapped_demos": 2, "max_labeled_demos": 6} | (
            {"metric_threshold": 0.5} if "metric_threshold" in entry["optimizer"]["params"] else {})
    path.write_text(yaml.safe_dump(config))
    return path


class PipelinePromises(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="promises-"))
        self.saved = set_env(self.root / "tp")
        os.environ["TELEPROMPT_CONFIG"] = str(_config(self.root / "teleprompt.yaml"))
        os.environ["TELEPROMPT_ATTESTER_KEY"] = "0x" + "5a" * 32
        self.settings = load_settings()
        self.specs = load_project(self.settings.config_path)[1]
        self.client = connect(self.settings)
        self.job = build_definitions().resolve_job_def(OPTIMIZE_JOB)
        self._instance = dg.instance_for_test()
        self.instance = self._instance.__enter__()
        self.seeds = 0

    def teardown(self) -> None:
        self._instance.__exit__(None, None, None)
        os.environ.clear()
        os.environ.update(self.saved)
        shutil.rmtree(self.root, ignore_errors=True)

    @initialize(traffic=st.sets(st.sampled_from(DAYS), min_size=1))
    def production_so_far(self, traffic: set[date]) -> None:
        """Some days already have traffic when the pipeline is deployed; others stay empty."""
        for day in sorted(traffic):
            for program in PROGRAMS:
                self.seeds += 1
                seed_program(self.settings, self.specs[program], day, days=1, per_day=PER_DAY, seed=self.seeds)

    @rule(day=st.sampled_from(DAYS), program=st.sampled_from(PROGRAMS), kind=st.sampled_from(["empty", "normal", "normal", "mislabelled"]))
    def log_traffic(self, day: date, program: str, kind: str) -> None:
        self.seeds += 1
        if kind == "empty":
            return
        if kind == "mislabelled" and program == "ticket_router":
            self._log_mislabelled(day)
        else:
            seed_program(self.settings, self.specs[program], day, days=1, per_day=PER_DAY, seed=self.seeds)

    def _log_mislabelled(self, day: date) -> None:
        """Every ground-truth label names a wrong queue: demos learned from it make the router worse."""
        spec = self.specs["ticket_router"]
        exp = experiment_id(self.client, self.settings, spec.config.experiment)
        rng = random.Random(self.seeds)
        program = spec.build()
        with dspy.context(lm=offline_lm()):
            self._log_tickets(spec, exp, program, day, tickets(PER_DAY, rng, label_rate=1.0))

    def _log_tickets(self, spec, exp: str, program, day: date, batch) -> None:
        for i, ticket in enumerate(batch):
            trace_id, _ = traced_call(spec.name, ticket.contributor.address, {"message": ticket.message}, lambda message: program(message=message),
                                      experiment_id=exp, start_time_ns=day_start_ns(day) + (i + 1) * 10**12, output_fields=spec.output_fields)
            wrong = QUEUES[(QUEUES.index(ticket.true_queue) + 1) % len(QUEUES)]
            label_trace(trace_id, ticket.contributor.address, {"resolved_first_touch": False, "csat": 0.2}, {"queue": wrong})

    def _run(self, programs: list[str], day: date) -> None:
        result = self.job.execute_in_process(instance=self.instance, tags=run_tags(self.job.partitions_def, programs, day.isoformat()), raise_on_error=False)
        # a regressing candidate is a result (no_regression warns); nothing may fail the run
        failed = [e.step_key for e in result.all_events if e.is_step_failure]
        assert not failed, failed

    @rule(day=st.sampled_from(DAYS), both=st.booleans(), program=st.sampled_from(PROGRAMS))
    def run_day(self, day: date, both: bool, program: str) -> None:
        self._run(PROGRAMS if both else [program], day)

    @rule(program=st.sampled_from(PROGRAMS))
    def roll_back(self, program: str) -> None:
        try:
            rollback.rollback(self.client, self.specs[program], offline_lm())
        except rollback.RollbackError:
            pass

    @invariant()
    def champions_were_replaced_only_on_evidence(self) -> None:
        for spec in self.specs.values():
            for version in self.client.search_model_versions(f"name = '{spec.registered_model_name}'"):
                tags = version.tags
                if not tags.get("promoted_at"):
                    continue
                assert int(tags["eval_count"]) >= MIN_HOLDOUT, tags
                assert int(tags["candidate_score"]) > int(tags["baseline_score"]), tags
                assert int(tags["base_version"]) == int(tags.get("previous_champion") or 0), tags

    @invariant()
    def each_version_is_one_of_a_kind_and_its_run_holds_its_own_files(self) -> None:
        for spec in self.specs.values():
            versions = self.client.search_model_versions(f"name = '{spec.registered_model_name}'")
            kinds = Counter((v.tags["window"], v.tags["program_hash"]) for v in versions)
            assert max(kinds.values(), default=1) == 1, kinds
            for version in versions:
                with tempfile.TemporaryDirectory() as tmp:
                    state = json.loads(Path(self.client.download_artifacts(version.run_id, registry.STATE_ARTIFACT, tmp)).read_text())
                    assert registry.program_hash(state) == version.tags["program_hash"]
                    if version.tags.get("attestation_uid"):
                        bundle = Path(self.client.download_artifacts(version.run_id, "attestation", tmp))
                        assert json.loads((bundle / "attestation.json").read_text())["uid"] == version.tags["attestation_uid"]

    @invariant()
    def attestations_are_unique_per_version_and_verify(self) -> None:
        for program in PROGRAMS:
            folder = self.settings.outbox / program
            bundles = sorted(folder.iterdir()) if folder.is_dir() else []
            versions: Counter[int] = Counter()
            for bundle in bundles:
                assert verify_bundle(bundle) == [], bundle
                versions[_attested_version(bundle)] += 1
            assert all(count == 1 for count in versions.values()), versions


def _attested_version(bundle: Path) -> int:
    from teleprompt_assets.attest.bundles import SCHEMA
    from teleprompt_assets.attest.eas import decode_data

    message = json.loads((bundle / "attestation.json").read_text())["message"]
    return int(decode_data(SCHEMA, message["data"])["modelVersion"])


# Each step runs real pipelines (seconds each): a few short sequences, and no shrinking, which would
# replay dozens of them; a failure still prints the whole sequence that broke a promise.
PipelinePromises.TestCase.settings = settings(max_examples=int(os.environ.get("PROMISES_EXAMPLES", "3")), stateful_step_count=8, deadline=None,
                                              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck), print_blob=True)
TestPipelinePromises = PipelinePromises.TestCase
