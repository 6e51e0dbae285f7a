"""From the phases' raw results to the flat list of figures, the targets and the printed table.

Every figure is a number under a stable dotted key (`ingest.c16.accepted_per_s`), with the raw
limit it is compared with, their ratio, and the target it is checked against where there is one.
tests/bench/test_bench_quick.py checks that every key of REQUIRED_FIGURES is present and positive.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

INGEST_LEVELS = (1, 16, 64)
E2E_RATES = (100, 200)

# Figures every complete report has; all must be > 0.
REQUIRED_FIGURES: tuple[str, ...] = (
    "raw.pg_commits_per_s", "raw.rabbitmq_publishes_per_s",
    "raw.noop_per_s", "raw.noop_per_s_per_process", "raw.bare_email_per_s", "raw.bare_email_per_s_per_process",
    *(f"ingest.c{c}.{name}" for c in INGEST_LEVELS for name in ("accepted_per_s", "p50_ms", "p99_ms")),
    "relay.one.rows_per_s", "relay.two.rows_per_s", "relay.lag200.p50_ms", "relay.lag200.p99_ms",
    "workers.emails_per_s", "workers.emails_per_s_per_process",
    *(f"e2e.r{r}.{name}" for r in E2E_RATES for name in ("achieved_per_s", "p50_ms", "p95_ms", "p99_ms")),
    "memory.web_worker_mb", "memory.relay_mb", "memory.dramatiq_process_mb",
)
# Present in every complete report, zero allowed.
REQUIRED_COUNTS: tuple[str, ...] = tuple(f"e2e.r{r}.backlog_at_end" for r in E2E_RATES)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def _r(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def noise(result: dict[str, Any] | None, key: str = "cpu_cores") -> float | None:
    """Cores used by what is not this benchmark (other people's processes on a shared machine,
    interrupts) while a figure was measured: the larger, the more the figure understates."""
    cpu = (result or {}).get(key)
    if not cpu:
        return None
    return round(cpu.get("other", 0.0) + cpu.get("unattributed", 0.0), 2)


def build_figures(phases: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Flatten the phase results into {key: {label, value, unit, raw, ratio}}."""
    figures: dict[str, dict[str, Any]] = {}

    def add(key: str, label: str, value: float | None, unit: str, raw: str | None = None,
            ratio: float | None = None, during: dict[str, Any] | None = None) -> None:
        if value is None:
            return
        if raw and raw in figures and figures[raw]["value"]:
            ratio = value / figures[raw]["value"]
        figures[key] = {"label": label, "value": value, "unit": unit, "raw": raw,
                        "ratio": None if ratio is None else round(ratio, 3), "noise_cores": noise(during)}

    raw = phases.get("raw", {})
    if "pg" in raw:
        add("raw.pg_commits_per_s", "PostgreSQL 2-row insert tx (1 KB jsonb event + outbox), 16 conns",
            raw["pg"]["commits_per_s"], "commits/s", during=raw["pg"])
    if "rabbitmq" in raw:
        add("raw.rabbitmq_publishes_per_s", "RabbitMQ persistent 1 KB publishes, confirms per 100",
            raw["rabbitmq"]["publishes_per_s"], "msgs/s", during=raw["rabbitmq"])
    for name, label, unit in (("noop", "Dramatiq no-op actor drain", "msgs/s"),
                              ("bare_email", "Dramatiq bare e-mail actor (render + SMTP)", "e-mails/s")):
        if name in raw:
            add(f"raw.{name}_per_s", label, raw[name]["per_s"], unit, during=raw[name])
            add(f"raw.{name}_per_s_per_process", f"{label}, per process", raw[name]["per_s_per_process"], unit,
                during=raw[name])

    for level, result in phases.get("ingest", {}).get("levels", {}).items():
        add(f"ingest.c{level}.accepted_per_s", f"Ingest, {level} clients: accepted", result["accepted_per_s"], "/s",
            raw="raw.pg_commits_per_s", during=result)
        add(f"ingest.c{level}.p50_ms", f"Ingest, {level} clients: p50", result["p50_ms"], "ms", during=result)
        add(f"ingest.c{level}.p99_ms", f"Ingest, {level} clients: p99", result["p99_ms"], "ms", during=result)

    relay = phases.get("relay", {})
    if "one" in relay:
        add("relay.one.rows_per_s", f"Relay, 1 process, {relay['one']['rows']:,} rows", relay["one"]["rows_per_s"],
            "rows/s", raw="raw.rabbitmq_publishes_per_s", during=relay["one"])
    if "two" in relay:
        add("relay.two.rows_per_s", f"Relay, 2 processes, {relay['two']['rows']:,} rows", relay["two"]["rows_per_s"],
            "rows/s", raw="raw.rabbitmq_publishes_per_s", during=relay["two"])
    if "lag" in relay:
        rate = relay["lag"]["rate"]
        add("relay.lag200.p50_ms", f"Relay lag commit->published at {rate:g}/s: p50", relay["lag"]["p50_ms"], "ms",
            during=relay["lag"])
        add("relay.lag200.p99_ms", f"Relay lag commit->published at {rate:g}/s: p99", relay["lag"]["p99_ms"], "ms",
            during=relay["lag"])

    workers = phases.get("workers", {})
    if "emails_per_s" in workers:
        add("workers.emails_per_s", f"Workers: confirmation e-mails, draining {workers['notifications']:,}",
            workers["emails_per_s"], "e-mails/s", raw="raw.bare_email_per_s", during=workers)
        add("workers.emails_per_s_per_process", "Workers: e-mails per Dramatiq process",
            workers["emails_per_s_per_process"], "e-mails/s", raw="raw.bare_email_per_s_per_process", during=workers)
    if "apply_per_s" in workers:
        add("workers.apply_per_s", "Workers: webhook events applied (registrations queue)", workers["apply_per_s"],
            "events/s", raw="raw.noop_per_s", during={"cpu_cores": workers.get("apply_cpu_cores")})

    for rate, result in phases.get("e2e", {}).get("rates", {}).items():
        prefix = f"e2e.r{rate}"
        add(f"{prefix}.achieved_per_s", f"End to end at {rate}/s: webhooks sent", result["achieved_per_s"], "/s",
            raw="raw.bare_email_per_s", during=result)
        for q in ("p50", "p95", "p99"):
            add(f"{prefix}.{q}_ms", f"End to end at {rate}/s: webhook -> SMTP {q}", result[f"{q}_ms"], "ms",
                during=result)
        add(f"{prefix}.backlog_at_end", f"End to end at {rate}/s: backlog at window end", result["backlog_at_end"],
            "e-mails", during=result)
        figures[f"{prefix}.backlog_at_end"]["kept_up"] = bool(result["kept_up"])

    memory = phases.get("memory", {})
    budgets = {"web_worker_mb": 120, "relay_mb": 80, "dramatiq_process_mb": 150}
    labels = {"web_worker_mb": "Peak RSS: gunicorn worker", "web_master_mb": "Peak RSS: gunicorn master",
              "relay_mb": "Peak RSS: relay", "dramatiq_process_mb": "Peak RSS: Dramatiq worker process",
              "dramatiq_master_mb": "Peak RSS: Dramatiq master", "smtp_sink_mb": "Peak RSS: SMTP sink (harness)"}
    for name, label in labels.items():
        if memory.get(name):
            budget = budgets.get(name)
            add(f"memory.{name}", label, memory[name], "MB", ratio=memory[name] / budget if budget else None)
    return figures


def evaluate_targets(figures: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    def value(key: str) -> float | None:
        return figures.get(key, {}).get("value")

    def ratio(key: str) -> float | None:
        return figures.get(key, {}).get("ratio")

    checks: list[tuple[str, str, Any, str, Any]] = [
        ("ingest at 16 clients >= 30% of raw 2-row commit rate", "ingest.c16.accepted_per_s",
         ratio("ingest.c16.accepted_per_s"), ">=", 0.30),
        ("relay >= 50% of raw batched publish-confirm rate", "relay.one.rows_per_s",
         ratio("relay.one.rows_per_s"), ">=", 0.50),
        ("end to end at 100/s: p50 <= 100 ms", "e2e.r100.p50_ms", value("e2e.r100.p50_ms"), "<=", 100),
        ("end to end at 100/s: p99 <= 500 ms", "e2e.r100.p99_ms", value("e2e.r100.p99_ms"), "<=", 500),
        ("end to end at 100/s: no backlog (kept up)", "e2e.r100.backlog_at_end",
         figures.get("e2e.r100.backlog_at_end", {}).get("kept_up"), "is", True),
        ("workers e-mails/s per process >= 50% of bare actor", "workers.emails_per_s_per_process",
         ratio("workers.emails_per_s_per_process"), ">=", 0.50),
        ("RSS gunicorn worker <= 120 MB", "memory.web_worker_mb", value("memory.web_worker_mb"), "<=", 120),
        ("RSS relay <= 80 MB", "memory.relay_mb", value("memory.relay_mb"), "<=", 80),
        ("RSS Dramatiq process <= 150 MB", "memory.dramatiq_process_mb", value("memory.dramatiq_process_mb"), "<=",
         150),
    ]
    results = []
    for name, key, measured, op, threshold in checks:
        if measured is None:
            met = None
        elif op == "is":
            met = measured is threshold
        else:
            met = measured >= threshold if op == ">=" else measured <= threshold
        results.append({"target": name, "figure": key, "measured": measured, "op": op, "threshold": threshold,
                        "met": met})
    return results


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.1f}"
    return f"{text} {unit}".strip()


def render_table(report: dict[str, Any]) -> str:
    meta, figures, targets = report["meta"], report["figures"], report["targets"]
    by_figure: dict[str, list[dict[str, Any]]] = {}
    for target in targets:
        by_figure.setdefault(target["figure"], []).append(target)
    versions = meta["versions"]
    config = meta["config"]
    web_workers = meta.get("web_workers") or config["web_workers"]
    lines = [
        f"eventplatform benchmark, {meta['started_at']} ({'quick' if meta['quick'] else 'full'} run, "
        f"{meta['duration_s']:.0f} s), {meta['cores']} cores ({meta['cpu_model']})",
        "versions: " + ", ".join(f"{name} {version}" for name, version in versions.items()),
        f"stack: gunicorn {web_workers} sync workers; rundramatiq {config['worker_processes']} processes x "
        f"{config['worker_threads']} threads; 1 relay (batch {config['relay_batch_size']}); "
        f"SMTP sink in its own process",
        "",
    ]
    header = ("Figure", "Value", "Raw limit", "Ratio", "Target", "Met", "Noise")
    rows: list[tuple[str, ...]] = []
    for key, figure in figures.items():
        raw = figures.get(figure["raw"]) if figure.get("raw") else None
        target_text, met_text = "", ""
        for target in by_figure.get(key, []):
            if target["figure"] == "e2e.r100.backlog_at_end":
                target_text = "none"
            elif target["figure"].startswith(("ingest", "relay", "workers")):
                target_text = f"ratio {target['op']} {target['threshold']:.2f}"
            else:
                target_text = f"{target['op']} {target['threshold']:g}"
            met_text = {True: "yes", False: "NO", None: "n/a"}[target["met"]]
        extra = ""
        if key.endswith("backlog_at_end"):
            extra = " (kept up)" if figure.get("kept_up") else " (fell behind)"
        if key.startswith("memory.") and figure.get("ratio") is not None:
            raw_text = "budget"
        else:
            raw_text = _fmt(raw["value"], raw["unit"]) if raw else ""
        ratio = figure.get("ratio")
        noise_cores = figure.get("noise_cores")
        rows.append((figure["label"], _fmt(figure["value"], figure["unit"]) + extra, raw_text,
                     "" if ratio is None else f"{ratio:.2f}", target_text, met_text,
                     "" if noise_cores is None else f"{noise_cores:.2f}"))
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:{'<' if i == 0 else '>'}{w}}}" for i, w in enumerate(widths))
    lines.append(fmt.format(*header))
    lines.append("  ".join("-" * w for w in widths))
    section = None
    for key, row in zip(figures, rows, strict=True):
        if section is not None and key.split(".")[0] != section:
            lines.append("")
        section = key.split(".")[0]
        lines.append(fmt.format(*row))
    met = sum(1 for t in targets if t["met"])
    lines += ["", "Noise: cores used by other processes on the machine (and interrupts) while the figure was "
                  f"measured; the figure understates by roughly that share of the {meta['cores']} cores.",
              "", f"targets met: {met} of {len(targets)}"]
    for target in targets:
        state = {True: "met", False: "NOT MET", None: "not measured"}[target["met"]]
        lines.append(f"  [{state}] {target['target']}")
    return "\n".join(lines)


def render_scaleout(report: dict[str, Any]) -> str:
    """The --scale-out table: one row per step, with what it adds over the first step."""
    meta = report["meta"]
    steps = report["phases"].get("scaleout", {}).get("steps", [])
    config = meta["config"]
    lines = [
        f"eventplatform scale-out, {meta['started_at']} ({'quick' if meta['quick'] else 'full'} run, "
        f"{meta['duration_s']:.0f} s), {meta['cores']} cores ({meta['cpu_model']}), "
        f"load average at end {', '.join(f'{v:.1f}' for v in meta['load_average_at_end'])}",
        f"load: {config['scale_clients']} closed-loop clients for {config['scale_seconds']:g} s per step; "
        f"each worker group is `rundramatiq --processes 1 --threads {config['worker_threads']}`",
        "",
    ]
    header = ("Step", "Web", "Relays", "Workers", "Accepted/s", "x", "E-mails/s", "x", "Missing", "Dup",
              "Rows published per relay", "E-mails per worker", "CPU ms/webhook", "Noise")
    rows = []
    for s in steps:
        published = "+".join(str(v) for v in s["published_by_relay"].values())
        rows.append((s["step"], str(s["web_workers"]), str(s["relays"]), str(s["worker_groups"]),
                     f"{s['accepted_per_s']:,.0f}", f"{s['accepted_per_s_vs_first'] or 0:.2f}",
                     f"{s['emails_per_s']:,.0f}", f"{s['emails_per_s_vs_first'] or 0:.2f}", str(s["missing"]),
                     str(s["duplicates"]), f"{published} = {s['published_total']} of {s['outbox_rows_created']}",
                     "+".join(str(v) for v in s["sent_by_worker"].values()),
                     f"{sum(s.get('cpu_ms_per_webhook', {}).values()):.1f}", str(noise(s) or 0)))
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:{'<' if i == 0 else '>'}{w}}}" for i, w in enumerate(widths))
    lines.append(fmt.format(*header))
    lines.append("  ".join("-" * w for w in widths))
    lines.extend(fmt.format(*row) for row in rows)
    lines.append("")
    lines.append("Rows published = webhook_event_apply + notification_send messages; their sum over the relays "
                 "equals the rows created when no row went out twice. CPU ms/webhook: web + relay + workers + "
                 "PostgreSQL + RabbitMQ. Noise: cores used by other people's work.")
    return "\n".join(lines)
