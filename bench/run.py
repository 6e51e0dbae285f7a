"""The pipeline benchmark: `make bench` (about 8 minutes) and `make bench-quick` (under 2 minutes).

Starts the real stack (gunicorn, run_relay, rundramatiq, an aiosmtpd sink in its own process) on
this machine's PostgreSQL and RabbitMQ, in a database and a vhost made for this run and dropped at
the end, measures the raw limits and the pipeline's figures in the same run, prints one table and
writes it all as JSON under bench/results/. Method and latest figures: docs/performance.md.
This is the entry point; bench/harness.py is the harness and bench/phases/ has one module per phase.

    .venv/bin/python bench/run.py [--quick] [--phases raw,ingest,relay,workers,e2e] [--profile]
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pika  # noqa: E402
import psycopg  # noqa: E402

from bench import report  # noqa: E402
from bench.harness import RESULTS_DIR, Bench, Config, PhaseFailed  # noqa: E402
from bench.phases import burst, e2e, ingest, raw, relay, scaleout, workers  # noqa: E402

# Each phase's module; a full run takes PHASES in this order, `--scale-out` runs `scaleout` alone.
PHASE_RUNNERS = {
    "raw": raw.run,
    "ingest": ingest.run,
    "relay": relay.run,
    "workers": workers.run,
    "e2e": e2e.run,
    "burst": burst.run,
    "scaleout": scaleout.run,
}
PHASES = ("raw", "ingest", "relay", "workers", "e2e", "burst")


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in (
        "Django",
        "djangorestframework",
        "dramatiq",
        "django-dramatiq",
        "pika",
        "psycopg",
        "gunicorn",
        "aiosmtpd",
    ):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "?"
    try:
        with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres") as conn:
            found["PostgreSQL"] = conn.execute("SHOW server_version").fetchone()[0].split()[0]
    except psycopg.Error:
        found["PostgreSQL"] = "?"
    try:
        connection = pika.BlockingConnection(pika.URLParameters("amqp://guest:guest@127.0.0.1:5672/%2F"))
        version = connection._impl.server_properties.get("version", "?")
        found["RabbitMQ"] = version.decode() if isinstance(version, bytes) else str(version)
        connection.close()
    except Exception:  # noqa: BLE001 - a version is nice to have
        found["RabbitMQ"] = "?"
    pgbench = subprocess.run(["pgbench", "--version"], capture_output=True, text=True).stdout
    found["pgbench"] = (re.findall(r"\) (\S+)", pgbench) or ["?"])[0]
    found["kernel"] = platform.release()
    return found


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return re.sub(r"\s+", " ", line.split(":", 1)[1].strip())
    except OSError:
        pass
    return platform.processor() or "?"


def run_several(runs: int) -> int:
    """`--runs N`: N complete runs one after the other, as separate processes, then the medians."""
    argv = []
    skip = False
    for arg in sys.argv[1:]:  # the same arguments, but --runs and --json-out
        if skip:
            skip = False
        elif arg in ("--runs", "--json-out"):
            skip = True
        elif not arg.startswith(("--runs=", "--json-out=")):
            argv.append(arg)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    reports, failed = [], 0
    for n in range(1, runs + 1):
        out = RESULTS_DIR / f"bench-{stamp}-run{n}.json"
        print(f"=== run {n} of {runs} ({out.name})", flush=True)
        failed += subprocess.run([sys.executable, __file__, *argv, "--json-out", str(out)], cwd=ROOT).returncode != 0
        if out.exists():
            reports.append(json.loads(out.read_text()))
    if not reports:
        return 1
    medians = report.median_report(reports)
    out = RESULTS_DIR / f"bench-{stamp}-medians.json"
    out.write_text(json.dumps({**medians, "metas": [r["meta"] for r in reports]}, indent=2, default=str))
    print("\n" + report.render_medians(medians, [r["meta"] for r in reports]))
    print(f"\nmedians: {out}")
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny configuration, a few seconds per phase")
    parser.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated subset of {','.join(PHASES)}")
    parser.add_argument("--json-out", help="report path (default bench/results/bench-<time>.json)")
    parser.add_argument("--db-name", help="database to create and drop (default bench_<time>_<random>)")
    parser.add_argument("--vhost", help="RabbitMQ vhost to create and delete (default as the database)")
    parser.add_argument(
        "--web-workers", type=int, help="gunicorn workers (WEB_CONCURRENCY; default: the project's gunicorn.conf.py)"
    )
    parser.add_argument(
        "--worker-processes", type=int, help="rundramatiq --processes (default: rundramatiq's own, one per core)"
    )
    parser.add_argument("--worker-threads", type=int, default=8, help="rundramatiq --threads (rundramatiq's default)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy (CPU samples) the gunicorn workers during an extra 16-client ingest run and the "
        "Dramatiq worker processes while they apply and send in the workers phase",
    )
    parser.add_argument(
        "--profile-dir", help="with --profile: where the collapsed stacks go (default bench/results/profile-<run>/)"
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs (path printed)")
    parser.add_argument(
        "--scale-out",
        action="store_true",
        help="only the scale-out steps: 1 relay + 1 worker group, then 2 relays, 2 worker groups "
        "and more web workers, under the same load (what each adds; nothing doubled)",
    )
    parser.add_argument(
        "--web-server",
        choices=("gunicorn", "granian"),
        default="gunicorn",
        help="gunicorn (the Procfile's) or granian (pip install granian; to compare)",
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=1,
        help="run everything this many times, each in its own database and vhost, and print the "
        "medians (make bench: 3)",
    )
    args = parser.parse_args()
    if args.runs > 1:
        return run_several(args.runs)
    phases = ["scaleout"] if args.scale_out else [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = set(phases) - set(PHASE_RUNNERS)
    if unknown:
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")

    def on_signal(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    config = Config.build(args)
    bench = Bench(config, args)
    started_at = dt.datetime.now(dt.UTC)
    try:
        bench.run({name: PHASE_RUNNERS[name] for name in phases})
    except (PhaseFailed, TimeoutError) as error:
        bench.errors.append(str(error))
        bench.log(f"FAILED: {error}")
    except Exception:
        bench.errors.append(traceback.format_exc())
        raise
    finally:
        bench.teardown()

    meta = {
        "started_at": started_at.strftime("%Y-%m-%d %H:%M UTC"),
        "duration_s": time.time() - bench.started,
        "quick": config.quick,
        "phases": phases,
        "cores": os.cpu_count(),
        "cpu_model": cpu_model(),
        "load_average_at_end": os.getloadavg(),
        "versions": versions(),
        "config": asdict(config),
        "database": bench.db_name,
        "vhost": bench.vhost,
        "web_workers": bench.web_workers,
    }
    figures = report.build_figures(bench.phases)
    full = {
        "meta": meta,
        "figures": figures,
        "targets": report.evaluate_targets(figures),
        "phases": bench.phases,
        "errors": bench.errors,
    }
    out = (
        Path(args.json_out)
        if args.json_out
        else (RESULTS_DIR / f"bench-{started_at.strftime('%Y%m%d-%H%M%S')}{'-quick' if config.quick else ''}.json")
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(full, indent=2, default=str))
    if "scaleout" in bench.phases:
        print(report.render_scaleout(full))
    else:
        print(report.render_table(full))
    print(f"\nreport: {out}")
    if bench.errors:
        print("\nerrors:\n" + "\n".join(bench.errors), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
