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
# The hops a webhook's CPU is accounted to, as the targets count it (the SMTP sink is the harness).
STACK_KINDS = ("web", "relay", "worker", "postgres", "rabbitmq")
# Issue 11's baseline (2026-12-01) with 5% for run-to-run variation: "memory no worse than today".
MEMORY_BUDGETS_MB = {"web_worker_mb": 69 * 1.05, "relay_mb": 75 * 1.05, "dramatiq_process_mb": 73 * 1.05}

# Figures every complete report has; all must be > 0.
REQUIRED_FIGURES: tuple[str, ...] = (
    "raw.pg_commits_per_s",
    "raw.rabbitmq_publishes_per_s",
    "raw.noop_per_s",
    "raw.noop_per_s_per_process",
    "raw.bare_email_per_s",
    "raw.bare_email_per_s_per_process",
    *(f"ingest.c{c}.{name}" for c in INGEST_LEVELS for name in ("accepted_per_s", "p50_ms", "p99_ms")),
    "relay.one.rows_per_s",
    "relay.two.rows_per_s",
    "relay.lag200.p50_ms",
    "relay.lag200.p99_ms",
    "workers.emails_per_s",
    "workers.emails_per_s_per_process",
    *(
        f"e2e.r{r}.{name}"
        for r in E2E_RATES
        for name in ("achieved_per_s", "p50_ms", "p95_ms", "p99_ms", "cpu_ms_per_webhook")
    ),
    "burst.last_email_s",
    "burst.emails_per_s",
    "burst.cpu_ms_per_webhook",
    "memory.web_worker_mb",
    "memory.relay_mb",
    "memory.dramatiq_process_mb",
)
# Present in every complete report, zero allowed.
REQUIRED_COUNTS: tuple[str, ...] = (*(f"e2e.r{r}.backlog_at_end" for r in E2E_RATES), "burst.duplicates")


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

    def add(
        key: str,
        label: str,
        value: float | None,
        unit: str,
        raw: str | None = None,
        ratio: float | None = None,
        during: dict[str, Any] | None = None,
    ) -> None:
        if value is None:
            return
        if raw and raw in figures and figures[raw]["value"]:
            ratio = value / figures[raw]["value"]
        figures[key] = {
            "label": label,
            "value": value,
            "unit": unit,
            "raw": raw,
            "ratio": None if ratio is None else round(ratio, 3),
            "noise_cores": noise(during),
        }

    def add_cpu(prefix: str, label: str, result: dict[str, Any]) -> None:
        """CPU ms per webhook of the stack (the target's sum), then each hop's share."""
        cpu = result.get("cpu_ms_per_webhook") or {}
        if not cpu:
            return
        add(
            f"{prefix}.cpu_ms_per_webhook",
            f"{label}: CPU per webhook (web+relay+workers+PG+RabbitMQ)",
            sum(cpu.get(kind, 0.0) for kind in STACK_KINDS),
            "ms",
            during=result,
        )
        for kind in STACK_KINDS:
            add(f"{prefix}.cpu_ms.{kind}", f"{label}: CPU per webhook, {kind}", cpu.get(kind, 0.0), "ms", during=result)

    raw = phases.get("raw", {})
    if "pg" in raw:
        add(
            "raw.pg_commits_per_s",
            "PostgreSQL 2-row insert tx (1 KB jsonb event + outbox), 16 conns",
            raw["pg"]["commits_per_s"],
            "commits/s",
            during=raw["pg"],
        )
    if "rabbitmq" in raw:
        add(
            "raw.rabbitmq_publishes_per_s",
            "RabbitMQ persistent 1 KB publishes, confirms per 100",
            raw["rabbitmq"]["publishes_per_s"],
            "msgs/s",
            during=raw["rabbitmq"],
        )
    for name, label, unit in (
        ("noop", "Dramatiq no-op actor drain", "msgs/s"),
        ("bare_email", "Dramatiq bare e-mail actor (render + SMTP)", "e-mails/s"),
    ):
        if name in raw:
            add(f"raw.{name}_per_s", label, raw[name]["per_s"], unit, during=raw[name])
            add(
                f"raw.{name}_per_s_per_process",
                f"{label}, per process",
                raw[name]["per_s_per_process"],
                unit,
                during=raw[name],
            )

    for level, result in phases.get("ingest", {}).get("levels", {}).items():
        add(
            f"ingest.c{level}.accepted_per_s",
            f"Ingest, {level} clients: accepted",
            result["accepted_per_s"],
            "/s",
            raw="raw.pg_commits_per_s",
            during=result,
        )
        add(f"ingest.c{level}.p50_ms", f"Ingest, {level} clients: p50", result["p50_ms"], "ms", during=result)
        add(f"ingest.c{level}.p99_ms", f"Ingest, {level} clients: p99", result["p99_ms"], "ms", during=result)

    relay = phases.get("relay", {})
    if "one" in relay:
        add(
            "relay.one.rows_per_s",
            f"Relay, 1 process, {relay['one']['rows']:,} rows",
            relay["one"]["rows_per_s"],
            "rows/s",
            raw="raw.rabbitmq_publishes_per_s",
            during=relay["one"],
        )
    if "two" in relay:
        add(
            "relay.two.rows_per_s",
            f"Relay, 2 processes, {relay['two']['rows']:,} rows",
            relay["two"]["rows_per_s"],
            "rows/s",
            raw="raw.rabbitmq_publishes_per_s",
            during=relay["two"],
        )
    if "lag" in relay:
        rate = relay["lag"]["rate"]
        add(
            "relay.lag200.p50_ms",
            f"Relay lag commit->published at {rate:g}/s: p50",
            relay["lag"]["p50_ms"],
            "ms",
            during=relay["lag"],
        )
        add(
            "relay.lag200.p99_ms",
            f"Relay lag commit->published at {rate:g}/s: p99",
            relay["lag"]["p99_ms"],
            "ms",
            during=relay["lag"],
        )

    workers = phases.get("workers", {})
    if "emails_per_s" in workers:
        add(
            "workers.emails_per_s",
            f"Workers: confirmation e-mails, draining {workers['notifications']:,}",
            workers["emails_per_s"],
            "e-mails/s",
            raw="raw.bare_email_per_s",
            during=workers,
        )
        add(
            "workers.emails_per_s_per_process",
            "Workers: e-mails per Dramatiq process",
            workers["emails_per_s_per_process"],
            "e-mails/s",
            raw="raw.bare_email_per_s_per_process",
            during=workers,
        )
    if "apply_per_s" in workers:
        add(
            "workers.apply_per_s",
            "Workers: webhook events applied (registrations queue)",
            workers["apply_per_s"],
            "events/s",
            raw="raw.noop_per_s",
            during={"cpu_cores": workers.get("apply_cpu_cores")},
        )

    for rate, result in phases.get("e2e", {}).get("rates", {}).items():
        prefix = f"e2e.r{rate}"
        add(
            f"{prefix}.achieved_per_s",
            f"End to end at {rate}/s: webhooks sent",
            result["achieved_per_s"],
            "/s",
            raw="raw.bare_email_per_s",
            during=result,
        )
        for q in ("p50", "p95", "p99"):
            add(
                f"{prefix}.{q}_ms",
                f"End to end at {rate}/s: webhook -> SMTP {q}",
                result[f"{q}_ms"],
                "ms",
                during=result,
            )
        add(
            f"{prefix}.backlog_at_end",
            f"End to end at {rate}/s: backlog at window end",
            result["backlog_at_end"],
            "e-mails",
            during=result,
        )
        figures[f"{prefix}.backlog_at_end"]["kept_up"] = bool(result["kept_up"])
        add_cpu(prefix, f"End to end at {rate}/s", result)

    burst = phases.get("burst", {})
    if "last_email_s" in burst:
        label = f"Burst of {burst['webhooks']:,}"
        add(
            "burst.accepted_per_s",
            f"{label}: webhooks accepted",
            burst["accepted_per_s"],
            "/s",
            raw="raw.pg_commits_per_s",
            during=burst,
        )
        add("burst.last_email_s", f"{label}: first post -> last e-mail", burst["last_email_s"], "s", during=burst)
        add(
            "burst.emails_per_s",
            f"{label}: e-mails",
            burst["emails_per_s"],
            "e-mails/s",
            raw="raw.bare_email_per_s",
            during=burst,
        )
        add(
            "burst.duplicates",
            f"{label}: e-mails doubled (missing: {burst['missing']})",
            burst["duplicates"],
            "e-mails",
            during=burst,
        )
        add_cpu("burst", label, burst)

    memory = phases.get("memory", {})
    budgets = MEMORY_BUDGETS_MB
    labels = {
        "web_worker_mb": "Peak RSS: gunicorn worker",
        "web_master_mb": "Peak RSS: gunicorn master",
        "relay_mb": "Peak RSS: relay",
        "dramatiq_process_mb": "Peak RSS: Dramatiq worker process",
        "dramatiq_master_mb": "Peak RSS: Dramatiq master",
        "smtp_sink_mb": "Peak RSS: SMTP sink (harness)",
    }
    for name, label in labels.items():
        if memory.get(name):
            budget = budgets.get(name)
            add(f"memory.{name}", label, memory[name], "MB", ratio=memory[name] / budget if budget else None)
    return figures


def evaluate_targets(figures: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 11's targets (docs/performance.md), each against one figure of the same run."""

    def value(key: str) -> float | None:
        return figures.get(key, {}).get("value")

    def ratio(key: str) -> float | None:
        return figures.get(key, {}).get("ratio")

    def kept_up(key: str) -> bool | None:
        return figures.get(key, {}).get("kept_up")

    budgets = MEMORY_BUDGETS_MB
    checks: list[tuple[str, str, Any, str, Any, str]] = [
        (
            "CPU per webhook in a burst <= 8 ms",
            "burst.cpu_ms_per_webhook",
            value("burst.cpu_ms_per_webhook"),
            "<=",
            8,
            "<= 8 ms",
        ),
        (
            "CPU per webhook at a steady 100/s <= 9 ms",
            "e2e.r100.cpu_ms_per_webhook",
            value("e2e.r100.cpu_ms_per_webhook"),
            "<=",
            9,
            "<= 9 ms",
        ),
        (
            "end to end at 200/s for 60 s: p50 <= 150 ms",
            "e2e.r200.p50_ms",
            value("e2e.r200.p50_ms"),
            "<=",
            150,
            "<= 150",
        ),
        (
            "end to end at 200/s for 60 s: p99 <= 1 s",
            "e2e.r200.p99_ms",
            value("e2e.r200.p99_ms"),
            "<=",
            1000,
            "<= 1000",
        ),
        (
            "end to end at 200/s for 60 s: no backlog (kept up)",
            "e2e.r200.backlog_at_end",
            kept_up("e2e.r200.backlog_at_end"),
            "is",
            True,
            "kept up",
        ),
        ("end to end at 100/s: p99 <= 200 ms", "e2e.r100.p99_ms", value("e2e.r100.p99_ms"), "<=", 200, "<= 200"),
        (
            "end to end at 100/s: no backlog (kept up)",
            "e2e.r100.backlog_at_end",
            kept_up("e2e.r100.backlog_at_end"),
            "is",
            True,
            "kept up",
        ),
        (
            "burst: last e-mail within 30 s of the first post",
            "burst.last_email_s",
            value("burst.last_email_s"),
            "<=",
            30,
            "<= 30 s",
        ),
        ("burst: no e-mail doubled", "burst.duplicates", value("burst.duplicates"), "<=", 0, "none"),
        (
            "ingest at 16 clients >= 0.40 of raw 2-row commit rate",
            "ingest.c16.accepted_per_s",
            ratio("ingest.c16.accepted_per_s"),
            ">=",
            0.40,
            "ratio >= 0.40",
        ),
        (
            "relay >= 0.50 of raw batched publish-confirm rate",
            "relay.one.rows_per_s",
            ratio("relay.one.rows_per_s"),
            ">=",
            0.50,
            "ratio >= 0.50",
        ),
        (
            "workers e-mails/s per process >= 0.70 of bare actor",
            "workers.emails_per_s_per_process",
            ratio("workers.emails_per_s_per_process"),
            ">=",
            0.70,
            "ratio >= 0.70",
        ),
        *(
            (
                f"RSS {name.removesuffix('_mb').replace('_', ' ')} <= {budget:.0f} MB (issue 11's figure + 5%)",
                f"memory.{name}",
                value(f"memory.{name}"),
                "<=",
                round(budget, 1),
                f"<= {budget:.0f}",
            )
            for name, budget in budgets.items()
        ),
    ]
    results = []
    for name, key, measured, op, threshold, text in checks:
        if measured is None:
            met = None
        elif op == "is":
            met = measured is threshold
        else:
            met = measured >= threshold if op == ">=" else measured <= threshold
        results.append(
            {
                "target": name,
                "figure": key,
                "measured": measured,
                "op": op,
                "threshold": threshold,
                "text": text,
                "met": met,
            }
        )
    return results


_MET_CELL = {True: "yes", False: "NO", None: "n/a"}
_MET_STATE = {True: "met", False: "NOT MET", None: "not measured"}


def _value_text(key: str, figure: dict[str, Any]) -> str:
    """The figure's value with its unit; a backlog says whether the pipeline kept up."""
    text = _fmt(figure["value"], figure["unit"])
    if key.endswith("backlog_at_end"):
        text += " (kept up)" if figure.get("kept_up") else " (fell behind)"
    return text


def _target_summary(targets: Sequence[dict[str, Any]], heading: str) -> list[str]:
    met = sum(1 for t in targets if t["met"])
    return [f"{heading}: {met} of {len(targets)}", *(f"  [{_MET_STATE[t['met']]}] {t['target']}" for t in targets)]


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.1f}"
    return f"{text} {unit}".strip()


def _figure_rows(header: Sequence[str], rows: list[tuple[str, ...]], keys: list[str]) -> list[str]:
    """The header, a rule and one line per figure, columns aligned, a blank line between sections."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:{'<' if i == 0 else '>'}{w}}}" for i, w in enumerate(widths))
    lines = [fmt.format(*header), "  ".join("-" * w for w in widths)]
    section = None
    for key, row in zip(keys, rows, strict=True):
        if section is not None and key.split(".")[0] != section:
            lines.append("")
        section = key.split(".")[0]
        lines.append(fmt.format(*row))
    return lines


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
            target_text = target["text"]
            met_text = _MET_CELL[target["met"]]
        if key.startswith("memory.") and figure.get("ratio") is not None:
            raw_text = "budget"
        else:
            raw_text = _fmt(raw["value"], raw["unit"]) if raw else ""
        ratio = figure.get("ratio")
        noise_cores = figure.get("noise_cores")
        rows.append(
            (
                figure["label"],
                _value_text(key, figure),
                raw_text,
                "" if ratio is None else f"{ratio:.2f}",
                target_text,
                met_text,
                "" if noise_cores is None else f"{noise_cores:.2f}",
            )
        )
    lines += _figure_rows(header, rows, list(figures))
    lines += [
        "",
        "Noise: cores used by other processes on the machine (and interrupts) while the figure was "
        f"measured; the figure understates by roughly that share of the {meta['cores']} cores.",
        "",
        *_target_summary(targets, "targets met"),
    ]
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
    header = (
        "Step",
        "Web",
        "Relays",
        "Workers",
        "Accepted/s",
        "x",
        "E-mails/s",
        "x",
        "Missing",
        "Dup",
        "Rows published per relay",
        "E-mails per worker",
        "CPU ms/webhook",
        "Noise",
    )
    rows = []
    for s in steps:
        published = "+".join(str(v) for v in s["published_by_relay"].values())
        rows.append(
            (
                s["step"],
                str(s["web_workers"]),
                str(s["relays"]),
                str(s["worker_groups"]),
                f"{s['accepted_per_s']:,.0f}",
                f"{s['accepted_per_s_vs_first'] or 0:.2f}",
                f"{s['emails_per_s']:,.0f}",
                f"{s['emails_per_s_vs_first'] or 0:.2f}",
                str(s["missing"]),
                str(s["duplicates"]),
                f"{published} = {s['published_total']} of {s['outbox_rows_created']}",
                "+".join(str(v) for v in s["sent_by_worker"].values()),
                f"{sum(s.get('cpu_ms_per_webhook', {}).values()):.1f}",
                str(noise(s) or 0),
            )
        )
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:{'<' if i == 0 else '>'}{w}}}" for i, w in enumerate(widths))
    lines.append(fmt.format(*header))
    lines.append("  ".join("-" * w for w in widths))
    lines.extend(fmt.format(*row) for row in rows)
    lines.append("")
    lines.append(
        "Rows published = webhook_event_apply + notification_send messages; their sum over the relays "
        "equals the rows created when no row went out twice. CPU ms/webhook: web + relay + workers + "
        "PostgreSQL + RabbitMQ. Noise: cores used by other people's work."
    )
    return "\n".join(lines)


def median_report(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Several full runs as one: each figure's median over the runs (and its ratio's median, each run
    against its own raw limit), with the targets evaluated on the medians."""
    figures: dict[str, dict[str, Any]] = {}
    for report in reports:
        for key, figure in report["figures"].items():
            figures.setdefault(key, {**figure, "runs": [], "ratios": [], "kept": []})
            figures[key]["runs"].append(figure["value"])
            if figure.get("ratio") is not None:
                figures[key]["ratios"].append(figure["ratio"])
            if "kept_up" in figure:
                figures[key]["kept"].append(figure["kept_up"])
    for figure in figures.values():
        figure["value"] = percentile(figure["runs"], 50)
        figure["ratio"] = percentile(figure["ratios"], 50) if figure["ratios"] else None
        if figure["kept"]:
            figure["kept_up"] = sum(figure["kept"]) * 2 > len(figure["kept"])  # the median of yes/no
    return {"figures": figures, "targets": evaluate_targets(figures), "runs": len(reports)}


def render_medians(medians: dict[str, Any], metas: Sequence[dict[str, Any]]) -> str:
    figures, targets = medians["figures"], medians["targets"]
    by_figure = {target["figure"]: target for target in targets}
    runs = medians["runs"]
    lines = [
        f"eventplatform benchmark: medians of {runs} runs, "
        + "; ".join(f"{m['started_at']} ({m['duration_s']:.0f} s)" for m in metas),
        "",
    ]
    header = ("Figure", *(f"run {n + 1}" for n in range(runs)), "Median", "Ratio", "Target", "Met")
    rows = []
    for key, figure in figures.items():
        target = by_figure.get(key)
        rows.append(
            (
                figure["label"],
                *(_fmt(v) for v in figure["runs"]),
                *([""] * (runs - len(figure["runs"]))),
                _value_text(key, figure),
                "" if figure["ratio"] is None else f"{figure['ratio']:.2f}",
                target["text"] if target else "",
                _MET_CELL[target["met"]] if target else "",
            )
        )
    lines += _figure_rows(header, rows, list(figures))
    lines += ["", *_target_summary(targets, "targets met on the medians")]
    return "\n".join(lines)
