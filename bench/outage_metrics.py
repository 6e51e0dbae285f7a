"""What the metrics show when RabbitMQ stops for 30 s under load (issue: observability).

Starts the real stack (gunicorn, run_relay, rundramatiq, an SMTP sink) on a fresh database and
vhost, sends signed webhooks at a steady rate, stops RabbitMQ's app for 30 s, starts it again,
and prints the metrics every process exported before, during and after, plus /readyz. RabbitMQ is
started again in a `finally`, whatever happens.

    .venv/bin/python -m bench.outage_metrics [--rate 20] [--outage 30]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import requests

from apps.notifications.actor_names import QUEUE_NAME as NOTIFICATIONS_QUEUE
from apps.webhooks.apply_actor import APPLY_ACTOR
from bench.live import live_stack
from bench.stack import rabbitmqctl
from tests.support.webhooks import encode, payload, signed_headers

WATCHED = [
    ("web", "eventplatform_webhook_requests_total", {"outcome": "accepted"}),
    ("relay", "eventplatform_outbox_pending", {}),
    ("relay", "eventplatform_outbox_lag_seconds", {}),
    ("relay", "eventplatform_outbox_published_total", {}),
    ("relay", "eventplatform_outbox_publish_failures_total", {}),
    ("relay", "eventplatform_rabbitmq_up", {}),
    ("relay", "eventplatform_rabbitmq_queue_messages", {"queue": APPLY_ACTOR["queue_name"]}),
    ("relay", "eventplatform_rabbitmq_queue_messages", {"queue": NOTIFICATIONS_QUEUE}),
    ("workers", "eventplatform_notifications_total", {"status": "sent"}),
    ("workers", "eventplatform_dead_letters_total", {}),
]


def scrape(url: str) -> dict[str, float]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return {}
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            samples[key] = float(value)
    return samples


def metric(samples: dict[str, float], name: str, labels: dict[str, str]) -> float | None:
    found = None
    for key, value in samples.items():
        sample_name, _, label_text = key.partition("{")
        if sample_name == name and all(f'{k}="{v}"' in label_text for k, v in labels.items()):
            found = (found or 0.0) + value
    return found


def readyz(base_url: str) -> str:
    try:
        with urllib.request.urlopen(f"{base_url}/readyz", timeout=5) as response:
            return str(response.status)
    except urllib.error.HTTPError as error:
        return f"{error.code} {error.read().decode()[:60]}"
    except OSError as error:
        return f"error {error}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=20.0, help="webhooks per second")
    parser.add_argument("--outage", type=float, default=30.0, help="seconds RabbitMQ stays stopped")
    args = parser.parse_args()

    stop_load = threading.Event()
    statuses: list[int] = []
    with live_stack() as stack:
        base_url = stack.base_url
        urls = {"web": f"{base_url}/metrics", "relay": stack.relay_metrics_url, "workers": stack.worker_metrics_url}

        def load() -> None:
            session, seq = requests.Session(), 0
            while not stop_load.is_set():
                body = encode(payload(f"R-OUT-{seq}", email=f"a{seq}@example.org", phone=None))
                statuses.append(
                    session.post(
                        f"{base_url}/webhooks/bench/",
                        data=body,
                        headers=signed_headers(body, secret=stack.secret),
                        timeout=10,
                    ).status_code
                )
                seq += 1
                stop_load.wait(1 / args.rate)

        threading.Thread(target=load, daemon=True).start()
        snapshots: list[tuple[str, dict[str, dict[str, float]], str]] = []

        def snap(label: str) -> None:
            snapshots.append((label, {k: scrape(u) for k, u in urls.items()}, readyz(base_url)))

        time.sleep(15)
        snap("before (15 s of load)")
        rabbitmqctl("stop_app")
        try:
            time.sleep(args.outage / 2)
            snap(f"during ({args.outage / 2:.0f} s into the outage)")
            time.sleep(args.outage / 2)
            snap(f"during ({args.outage:.0f} s, just before start)")
        finally:
            rabbitmqctl("start_app")
            rabbitmqctl("await_startup", check=False)
        time.sleep(20)
        snap("after (20 s after start)")
        stop_load.set()
        time.sleep(15)
        snap("end (load stopped 15 s)")
        received = sum(1 for _ in stack.smtp_log.open()) if stack.smtp_log.exists() else 0

    print(
        f"webhooks sent: {len(statuses)}, accepted (202): {statuses.count(202)}, other: "
        f"{sorted(set(s for s in statuses if s != 202))}"
    )
    print(f"e-mails received by the SMTP sink: {received}")
    header = f"{'metric':62s}" + "".join(f"{label[:22]:>24s}" for label, _, _ in snapshots)
    print(header)
    for process, name_, labels in WATCHED:
        key = name_ + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
        values = [metric(samples[process], name_, labels) for _, samples, _ in snapshots]
        print(f"{key:62s}" + "".join(f"{'-' if v is None else f'{v:.1f}':>24s}" for v in values))
    print(f"{'GET /readyz':62s}" + "".join(f"{r[:22]:>24s}" for _, _, r in snapshots))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
