"""The bounce receiver under load: `make bench-bounces`.

    .venv/bin/python -m bench.bounce_receiver [--reports 2000] [--clients 8] [--threads 4]

Creates a throw-away PostgreSQL database, migrates it, seeds `--reports` e-mail notifications in
`sent` (one registration each), starts `run_bounce_receiver` as its own process (`--threads`
recording threads) and sends it one Postfix-format DSN per notification over SMTP from `--clients`
concurrent connections (each a persistent SMTP session, one transaction per DSN, as an MTA's
delivery agent sends them), half of them failures (5.1.1: bounced and suppressed), half successes
(relayed: delivered). Prints, as JSON:

- reports_per_second: DSNs the receiver answered 250 to (so committed: it answers after COMMIT),
  divided by the time from the first DSN's first byte to the last 250 (target >= 200/s);
- p50/p99/max from a DSN's arrival (its client starting the transaction) to its notification's
  status change (the row's updated_at, written in that transaction; same machine, same clock),
  target p99 <= 1 s;
- cpu_ms_per_report: the receiver process's CPU (user + system) per report, and PostgreSQL's
  (every postgres process on the machine, so an upper bound when others use it too).

Every DSN must have changed its notification (checked: the run fails otherwise). The database is
dropped at the end unless `--keep`.
"""

from __future__ import annotations

import argparse
import json
import os
import smtplib
import statistics
import string
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stack import database_create, database_drop  # noqa: E402
from tests.support.processes import start_bounce_receiver  # noqa: E402

BOUNCE_ADDRESS = "bounces@bounces.example.com"
SECRET_KEY = "bench-bounce-receiver-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz"
FIXTURES = ROOT / "tests" / "notifications" / "fixtures"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pids: list[int]) -> dict[int, int]:
    """User + system CPU ticks of each process still there."""
    ticks = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        ticks[pid] = int(fields[11]) + int(fields[12])  # utime, stime
    return ticks


def cpu_ms(before: dict[int, int], after: dict[int, int]) -> float:
    """CPU spent between two snapshots; a process that appeared meanwhile counts from zero."""
    return sum(ticks - before.get(pid, 0) for pid, ticks in after.items()) * 1000 / CLOCK_TICKS


def postgres_pids() -> list[int]:
    """Every postgres process (server and backends), by executable path."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if "postgres" in os.readlink(entry / "exe"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def seed(count: int) -> list[tuple[uuid.UUID, str, str]]:
    """`count` sent e-mail notifications; returns (id, recipient, provider message id) of each."""
    from django.utils import timezone

    from apps.notifications.models import Notification
    from apps.registrations.models import Registration
    from apps.webhooks.models import Portal

    portal = Portal.objects.create(slug="bench-bounces", name="Bench bounces")
    registrations = Registration.objects.bulk_create(
        [Registration(portal=portal, external_id=f"R-{i}", email=f"person{i}@example.org") for i in range(count)],
        batch_size=1000,
    )
    now = timezone.now()
    notifications = Notification.objects.bulk_create(
        [
            Notification(
                registration=registration,
                kind="confirmation",
                channel="email",
                status="sent",
                recipient=registration.email,
                context={},
                attempts=1,
                provider="email",
                provider_message_id=f"{uuid.uuid4().hex}@eventplatform.local",
                sent_at=now,
            )
            for registration in registrations
        ],
        batch_size=1000,
    )
    return [(n.id, n.recipient, n.provider_message_id) for n in notifications]


def render(notifications: list[tuple[uuid.UUID, str, str]]) -> list[tuple[uuid.UUID, str, bytes]]:
    """One DSN per notification, alternately a 5.1.1 failure and a success, with its VERP recipient."""
    from apps.notifications.channels.email import return_path

    templates = [
        string.Template((FIXTURES / name).read_text())
        for name in ("postfix_bounce_5.1.1.eml", "postfix_success_relayed.eml")
    ]
    rendered = []
    for index, (notification_id, recipient, message_id) in enumerate(notifications):
        rcpt = return_path.return_path_address(notification_id) or ""
        text = templates[index % 2].substitute(
            rcpt=rcpt,
            envid=return_path.return_path_token(notification_id),
            recipient=recipient,
            message_id=message_id,
            notification_id=str(notification_id),
        )
        rendered.append((notification_id, rcpt, text.replace("\n", "\r\n").encode()))
    return rendered


def send_all(
    port: int, dsns: list[tuple[uuid.UUID, str, bytes]], clients: int
) -> tuple[dict[uuid.UUID, float], float, list[str]]:
    """Send every DSN from `clients` threads; returns each one's start time (epoch seconds), the
    time the last reply came, and the replies that were not 250."""
    started: dict[uuid.UUID, float] = {}
    failures: list[str] = []
    lock = threading.Lock()
    finished = [0.0]

    def client(share: list[tuple[uuid.UUID, str, bytes]]) -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
            smtp.ehlo()
            for notification_id, rcpt, raw in share:
                begin = time.time()
                smtp.mail("<>")
                smtp.rcpt(rcpt)
                code, reply = smtp.data(raw)
                end = time.time()
                with lock:
                    started[notification_id] = begin
                    finished[0] = max(finished[0], end)
                    if code != 250:
                        failures.append(f"{code} {reply!r}")

    threads = [threading.Thread(target=client, args=(dsns[i::clients],)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return started, finished[0], failures


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reports", type=int, default=2000, help="DSNs to send (one per notification).")
    parser.add_argument("--clients", type=int, default=8, help="Concurrent SMTP connections sending them.")
    parser.add_argument("--threads", type=int, default=8, help="The receiver's recording threads.")
    parser.add_argument("--keep", action="store_true", help="Keep the database afterwards.")
    args = parser.parse_args()

    name = f"bench_bounces_{uuid.uuid4().hex[:8]}"
    database_url = f"postgres://postgres@127.0.0.1:5432/{name}"
    env = dict(
        os.environ,
        DATABASE_URL=database_url,
        DJANGO_SETTINGS_MODULE=os.environ.get("DJANGO_SETTINGS_MODULE", "eventplatform.settings.development"),
        SECRET_KEY=SECRET_KEY,
        EMAIL_BOUNCE_ADDRESS=BOUNCE_ADDRESS,
        LOG_FORMAT="json",
        LOG_LEVEL="INFO",  # as deployed: a line per report
        PYTHONUNBUFFERED="1",
        BOUNCE_METRICS_PORT="0",
    )
    os.environ.update({key: env[key] for key in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE", "SECRET_KEY")})
    os.environ["EMAIL_BOUNCE_ADDRESS"] = BOUNCE_ADDRESS
    database_create(name)
    receiver = None
    try:
        migrate = [sys.executable, "manage.py", "migrate", "--no-input"]
        subprocess.run(migrate, cwd=ROOT, env=env, check=True, capture_output=True)
        import django

        django.setup()
        from django.db import connection

        from apps.notifications.models import Notification

        notifications = seed(args.reports)
        dsns = render(notifications)
        receiver, port = start_bounce_receiver(env, threads=args.threads)
        before = (cpu_ticks([receiver.pid]), cpu_ticks(postgres_pids()))
        started, last_reply, failures = send_all(port, dsns, args.clients)
        after = (cpu_ticks([receiver.pid]), cpu_ticks(postgres_pids()))
        if failures:
            raise SystemExit(f"{len(failures)} DSNs not accepted, e.g. {failures[:3]}\n{receiver.output()}")
        changed = {
            notification_id: updated_at.timestamp()
            for notification_id, updated_at in Notification.objects.filter(
                status__in=("bounced", "delivered")
            ).values_list("id", "updated_at")
        }
        if len(changed) != len(dsns):
            raise SystemExit(f"only {len(changed)} of {len(dsns)} notifications changed status")
        latencies = [changed[notification_id] - begin for notification_id, begin in started.items()]
        elapsed = last_reply - min(started.values())
        connection.close()
        result = {
            "reports": len(dsns),
            "clients": args.clients,
            "receiver_threads": args.threads,
            "elapsed_s": round(elapsed, 2),
            "reports_per_second": round(len(dsns) / elapsed, 1),
            "arrival_to_status_ms": {
                "p50": round(statistics.median(latencies) * 1000, 1),
                "p99": round(percentile(latencies, 0.99) * 1000, 1),
                "max": round(max(latencies) * 1000, 1),
            },
            "cpu_ms_per_report": {
                "receiver": round(cpu_ms(before[0], after[0]) / len(dsns), 3),
                "postgresql": round(cpu_ms(before[1], after[1]) / len(dsns), 3),
            },
            "cores": os.cpu_count(),
        }
        print(json.dumps(result, indent=2))
    finally:
        if receiver is not None:
            receiver.stop()
        if not args.keep:
            database_drop(name)


if __name__ == "__main__":
    main()
