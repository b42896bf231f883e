"""A provider's ordinary 429s and 5xx against a clean provider, from the CLI, optionally under load (not a test).

    .venv/bin/python benchmarks/provider_faults.py                 # 20% 429 + 5% 500, 300 ms a call
    .venv/bin/python benchmarks/provider_faults.py --load 24       # the same beside 24 busy processes

Seven days of ticket_router traffic are seeded once (offline LM) into a home that is then copied, so
both sides read the same traces. Each side runs ``teleprompt run --program ticket_router`` against
its own ``teleprompt_assets.samples.lm_server`` over HTTP, configured as docs/hosted-lm.md says
(``TELEPROMPT_LM=openai/...``, ``TELEPROMPT_LM_API_BASE``, ``lm: {concurrency: 8, retries: 6,
backoff_s: 1.0}``, DSPy's native client): one server answers every call, the other answers 429 with
``Retry-After: 1`` to ~20% of requests and 500 to ~5%, drawn per request number (``--seed``).
``--load N`` keeps N busy-looping processes running through both runs (this machine has 2 cores; the
failure this reproduces was seen at a load average of ~25).

Both runs must exit 0 and print the same outcome (scores, version, promotion, attestation uid aside
from the run id). Last line:

    provider_faults: clean <a> s (<r> requests), faulty <b> s (<q> requests: <t> 429, <e> 5xx; <x> extra), same outcome: yes, load <N> (load average <l>)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
TELEPROMPT = str(Path(sys.executable).parent / "teleprompt")
PROGRAM = "ticket_router"
KEY = "sk-bench-faults"


def _stats(url: str) -> dict[str, int]:
    with urllib.request.urlopen(url.removesuffix("/v1") + "/stats", timeout=10) as response:
        return json.loads(response.read())


def _env(home: Path, config: Path, url: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TELEPROMPT_", "DAGSTER_"))}
    env |= {"TELEPROMPT_HOME": str(home), "TELEPROMPT_CONFIG": str(config), "DAGSTER_HOME": str(home / "dagster")}
    if url:
        env |= {"TELEPROMPT_LM": "openai/offline-learner", "TELEPROMPT_LM_API_BASE": url, "TELEPROMPT_LM_API_KEY": KEY}
    return env


def _run(home: Path, config: Path, url: str) -> tuple[float, str]:
    began = time.perf_counter()
    done = subprocess.run([TELEPROMPT, "run", "--program", PROGRAM], env=_env(home, config, url), capture_output=True, text=True, cwd=home.parent)
    seconds = time.perf_counter() - began
    lines = (done.stdout + done.stderr).splitlines()
    print(f"  {home.name}: exit {done.returncode} in {seconds:.1f} s, {len(lines)} lines", flush=True)
    for line in lines:
        print(f"    {line[:400]}", flush=True)
    if done.returncode != 0:
        raise SystemExit(f"provider_faults: the {home.name} run failed (exit {done.returncode})")
    [summary] = [line for line in lines if line.startswith(f"{PROGRAM} ") and ": run " in line]
    return seconds, summary.split("; ", 1)[1]


def main(argv: list[str] | None = None) -> int:
    from benchmarks.hosted_lm import start_server

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--throttle-rate", type=float, default=0.2)
    parser.add_argument("--error-rate", type=float, default=0.05)
    parser.add_argument("--latency-ms", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--load", type=int, default=0, help="busy-looping processes beside the runs")
    parser.add_argument("--root", type=Path, default=REPO / ".teleprompt" / "bench" / "provider-faults")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    config = yaml.safe_load((REPO / "teleprompt.yaml").read_text())
    config["programs"] = {PROGRAM: config["programs"][PROGRAM]}
    config["lm"] = {"concurrency": 8, "retries": 6, "backoff_s": 1.0}
    config_path = root / "teleprompt.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    clean, faulty = root / "clean", root / "faulty"
    done = subprocess.run([TELEPROMPT, "seed", "--program", PROGRAM, "--days", "7", "--per-day", "40"], env=_env(clean, config_path),
                          capture_output=True, text=True, cwd=root)
    if done.returncode != 0:
        raise SystemExit(f"provider_faults: seeding failed: {done.stderr.strip()[-500:]}")
    shutil.copytree(clean, faulty)
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.load)]
    servers = []
    try:
        time.sleep(3 if busy else 0)
        own = ("--model", "offline-learner", "--api-key", KEY)
        server, clean_url = start_server(args.latency_ms, *own)
        servers.append(server)
        server, faulty_url = start_server(args.latency_ms, *own, "--throttle-rate", str(args.throttle_rate), "--error-rate", str(args.error_rate),
                                          "--error-status", "500", "--retry-after-s", "1", "--seed", str(args.seed))
        servers.append(server)
        a, clean_outcome = _run(clean, config_path, clean_url)
        b, faulty_outcome = _run(faulty, config_path, faulty_url)
        load = os.getloadavg()[0]
        clean_stats, faulty_stats = _stats(clean_url), _stats(faulty_url)
    finally:
        for process in busy + servers:
            process.kill()
    same = clean_outcome == faulty_outcome
    if not same:
        print(f"outcomes differ:\n  clean:  {clean_outcome}\n  faulty: {faulty_outcome}")
    extra = faulty_stats["requests"] - clean_stats["requests"]
    print(f"provider_faults: clean {a:.1f} s ({clean_stats['requests']} requests), faulty {b:.1f} s ({faulty_stats['requests']} requests: "
          f"{faulty_stats['throttled']} 429, {faulty_stats['errors']} 5xx; {extra} extra), same outcome: {'yes' if same else 'no'}, "
          f"load {args.load} (load average {load:.1f})")
    return 0 if same else 1


if __name__ == "__main__":
    sys.path.append(str(REPO))
    sys.exit(main())
