"""The whole pipeline as real processes (gunicorn, run_relay, rundramatiq) on this run's PostgreSQL
database and RabbitMQ vhost, fed as a portal feeds it: signed webhooks POSTed over HTTP, the same
delivery again until it is acknowledged. Used by the fault tests (tests/test_fault_injection.py,
tests/test_mail_faults_end_to_end.py).
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
import signal
import time

import requests

from tests.support.notifications import emails_by_notification
from tests.support.polling import free_port
from tests.support.processes import (
    ManagedProcess,
    descendants,
    process_env,
    start_relay,
    start_web,
    start_worker,
    wait_until,
)
from tests.support.prometheus import metric, scrape
from tests.support.smtp import SmtpServer
from tests.support.webhooks import encode, payload, signed_headers

# Fast retries and a short claim lease, so each scenario settles in seconds rather than minutes (the
# lease is shorter than a send may take, which the claim check refuses outside these tests).
FAST = {
    "APPLY_MIN_BACKOFF_MS": "200",
    "APPLY_MAX_BACKOFF_MS": "1000",
    "NOTIFICATION_MIN_BACKOFF_MS": "200",
    "NOTIFICATION_MAX_BACKOFF_MS": "2000",
    "NOTIFICATION_CLAIM_TIMEOUT_SECONDS": "5",
    "SILENCED_SYSTEM_CHECKS": "notifications.E001",
    "RELAY_METRICS_PORT": "0",
    "LOG_LEVEL": "WARNING",
}


class Stack:
    """gunicorn + relay + worker sending to `smtp`; `env` overrides FAST and EMAIL_URL (settings of
    the children, eventplatform/settings/base.py)."""

    def __init__(self, smtp: SmtpServer, **env: str) -> None:
        self.env = process_env(**{"EMAIL_URL": smtp.url, **FAST, **env})
        self.web, self.base_url = start_web(self.env)
        self.relay = start_relay(self.env)
        self.worker = self.start_worker()
        self.stopped: list[ManagedProcess] = []

    def start_worker(self) -> ManagedProcess:
        port = free_port()
        self.worker_metrics_url = f"http://127.0.0.1:{port}/"  # the worker group's exporter
        return start_worker({**self.env, "dramatiq_prom_port": str(port)})

    def worker_metric(self, name: str, **labels: str) -> float | None:
        """One metric of the worker group's exporter (summed over matching labels); None while it
        does not answer yet."""
        try:
            return metric(scrape(self.worker_metrics_url), name, **labels)
        except OSError:
            return None

    def kill_worker(self) -> None:
        """SIGKILL the worker group, every process by its own PID (workers first, then their parent)."""
        for pid in [*reversed(descendants(self.worker.pid)), self.worker.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.worker.process.wait(timeout=10)
        self.stopped.append(self.worker)

    def kill_relay(self) -> None:
        self.relay.kill()
        self.stopped.append(self.relay)

    def post(self, registration_id: str, delivery_id: str) -> requests.Response:
        body = encode(payload(registration_id, email=f"{registration_id.lower()}@example.org", phone=None))
        return requests.post(
            f"{self.base_url}/webhooks/pretix/",
            data=body,
            timeout=10,
            headers=signed_headers(body, delivery_id=delivery_id),
        )

    def deliver(self, registration_id: str, statuses: collections.Counter[int]) -> None:
        """As a portal does: the same delivery again until it is acknowledged with a 2xx."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                response = self.post(registration_id, f"msg_{registration_id}")
                statuses[response.status_code] += 1
                if response.status_code in (200, 202):
                    return
            except requests.RequestException:
                statuses[0] += 1
            time.sleep(0.2)
        raise AssertionError(f"{registration_id} was never accepted")

    def send_in_background(
        self, registration_ids: list[str], statuses: collections.Counter[int], pause: float = 0.0, concurrency: int = 8
    ) -> concurrent.futures.Future[None]:
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=concurrency)

        def run() -> None:
            def one(registration_id: str) -> None:
                self.deliver(registration_id, statuses)
                time.sleep(pause)

            list(pool.map(one, registration_ids))

        future = concurrent.futures.ThreadPoolExecutor(max_workers=1).submit(run)
        future.add_done_callback(lambda _: pool.shutdown(wait=False))
        return future

    def logs(self) -> str:
        processes = [self.web, self.relay, self.worker, *self.stopped]
        return "\n".join(f"--- {p.name} {p.pid} ---\n{p.output()[-3000:]}" for p in processes)

    def stop(self) -> None:
        for process in (self.web, self.relay, self.worker):
            process.stop()


def wait_for_emails(stack: Stack, smtp: SmtpServer, count: int, timeout: float = 150) -> None:
    """Until `count` distinct notifications reached the SMTP server; on timeout, the processes' logs."""
    try:
        wait_until(
            lambda: len(emails_by_notification(smtp)) >= count,
            timeout=timeout,
            interval=0.5,
            what=f"{count} distinct e-mails",
        )
    except TimeoutError:
        raise AssertionError(f"{len(emails_by_notification(smtp))} of {count} e-mails\n{stack.logs()}") from None
