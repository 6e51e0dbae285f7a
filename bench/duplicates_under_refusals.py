"""Does anyone get an e-mail twice when the mail server keeps refusing? (the notifications issue)

Starts the real processes — gunicorn, run_relay, rundramatiq — on this machine's PostgreSQL and
RabbitMQ, in a database and a vhost made for this run (dropped at the end), with an aiosmtpd server
that answers `451 4.3.0` (transient) to a random 30 % of DATA commands. Posts 1,000 signed
`registration.created` webhooks (e-mail only), waits until every notification is `sent` or `dead`,
then counts the e-mails received more than once per X-Eventplatform-Notification-Id.

Production retry settings are used, except the rest between retry rounds (default 60 s instead of
30 min) so that an unlucky notification does not hold the run for half an hour.

    .venv/bin/python bench/duplicates_under_refusals.py [--registrations 1000] [--refusal-rate 0.3]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RUN_ID = f"bench_dup_{uuid.uuid4().hex[:8]}"
os.environ["DJANGO_SETTINGS_MODULE"] = "eventplatform.settings.development"
os.environ["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{RUN_ID}"
os.environ["BROKER_URL"] = f"amqp://guest:guest@127.0.0.1:5672/{RUN_ID}"
os.environ.setdefault("LOG_LEVEL", "WARNING")

import django  # noqa: E402
import psycopg  # noqa: E402
import requests  # noqa: E402
from aiosmtpd.controller import Controller  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.db.models import Count, Max  # noqa: E402

from apps.notifications.models import Notification, NotificationAttempt  # noqa: E402
from apps.webhooks.services import portal_create  # noqa: E402
from tests.support.polling import free_port  # noqa: E402
from tests.support.processes import process_env, start_relay, start_web, start_worker  # noqa: E402
from tests.support.webhooks import SECRET, encode, payload, signed_headers  # noqa: E402


class RefusingHandler:
    """Refuses a random share of DATA commands with 451; records what it accepted."""

    def __init__(self, refusal_rate: float, seed: int) -> None:
        self.refusal_rate = refusal_rate
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.accepted: Counter[str] = Counter()  # notification id -> e-mails received
        self.refused = 0

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            if self.random.random() < self.refusal_rate:
                self.refused += 1
                return "451 4.3.0 try again later"
            header = b"X-Eventplatform-Notification-Id: "
            start = envelope.content.index(header) + len(header)
            self.accepted[envelope.content[start : start + 36].decode()] += 1
        return "250 OK"


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=120)


def admin_sql(statement: str) -> None:
    with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True) as conn:
        conn.execute(statement)


def post_all(base_url: str, count: int) -> int:
    def post(n: int) -> int:
        body = encode(payload(f"R-{n:05d}", email=f"attendee{n}@example.org", phone=None))
        for _ in range(5):
            try:
                return requests.post(
                    f"{base_url}/webhooks/bench/", data=body, headers=signed_headers(body), timeout=30
                ).status_code
            except requests.RequestException:
                time.sleep(1)
        return 0

    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        statuses = Counter(pool.map(post, range(count)))
    return statuses[202]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--registrations", type=int, default=1000)
    parser.add_argument("--refusal-rate", type=float, default=0.3)
    parser.add_argument("--round-delay", type=int, default=60, help="NOTIFICATION_ROUND_DELAY_SECONDS for the run.")
    parser.add_argument("--timeout", type=float, default=900, help="Seconds to wait for every notification.")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    admin_sql(f'CREATE DATABASE "{RUN_ID}"')
    rabbitmqctl("add_vhost", RUN_ID)
    rabbitmqctl("set_permissions", "-p", RUN_ID, "guest", ".*", ".*", ".*")
    handler = RefusingHandler(args.refusal_rate, args.seed)
    smtp = Controller(handler, hostname="127.0.0.1", port=free_port())
    processes = []
    try:
        call_command("migrate", verbosity=0)
        portal_create(slug="bench", name="Bench", secret=SECRET)
        smtp.start()
        env = process_env(
            EMAIL_URL=f"smtp://127.0.0.1:{smtp.port}",
            RELAY_METRICS_PORT="0",
            LOG_LEVEL="WARNING",
            NOTIFICATION_ROUND_DELAY_SECONDS=str(args.round_delay),
            dramatiq_prom_port=str(free_port()),
        )
        web, base_url = start_web(env)
        processes += [web, start_relay(env), start_worker(env, processes=2, threads=8)]
        started = time.monotonic()

        accepted = post_all(base_url, args.registrations)
        posted = time.monotonic() - started
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            unfinished = Notification.objects.exclude(status__in=("sent", "dead")).count()
            if Notification.objects.count() >= accepted and not unfinished:
                break
            time.sleep(1)
        elapsed = time.monotonic() - started
        time.sleep(5)  # a late duplicate would arrive within this window
        worker_log = processes[2].output()

        statuses = dict(Notification.objects.values_list("status").annotate(n=Count("id")))
        attempts = Counter(Notification.objects.values_list("attempts", flat=True))
        duplicates = {nid: n for nid, n in handler.accepted.items() if n > 1}
        sent_ids = {str(pk) for pk in Notification.objects.filter(status="sent").values_list("id", flat=True)}
        received_ids = set(handler.accepted)
        print(f"registrations posted:            {args.registrations} (202 accepted: {accepted}, in {posted:.1f} s)")
        print(f"SMTP refusal rate:               {args.refusal_rate:.0%} (451 4.3.0), seed {args.seed}")
        print(f"notifications:                   {sum(statuses.values())} {dict(sorted(statuses.items()))}")
        print(
            f"SMTP DATA commands:              {handler.refused + sum(handler.accepted.values())} "
            f"({handler.refused} refused, {sum(handler.accepted.values())} accepted)"
        )
        print(f"e-mails received twice or more:  {len(duplicates)} {duplicates or ''}")
        print(f"sent but never received:         {len(sent_ids - received_ids)}")
        print(f"received but not recorded sent:  {len(received_ids - sent_ids)}")
        print(f"attempts per notification:       {dict(sorted(attempts.items()))}")
        print(
            f"attempt rows:                    {NotificationAttempt.objects.count()} "
            f"(max attempts {Notification.objects.aggregate(m=Max('attempts'))['m']})"
        )
        print(
            f"breaker openings / reopenings:   {worker_log.count('circuit_breaker.opened')} / "
            f"{worker_log.count('circuit_breaker.reopened')}; retry rounds: "
            f"{worker_log.count('notification.retry_round_scheduled')}"
        )
        print(f"time to all finished:            {elapsed:.1f} s")
    finally:
        for process in processes:
            process.stop()
        smtp.stop()
        connection.close()
        admin_sql(f'DROP DATABASE IF EXISTS "{RUN_ID}" WITH (FORCE)')
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", RUN_ID], capture_output=True, timeout=120)


if __name__ == "__main__":
    main()
