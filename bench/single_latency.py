"""How long one signed webhook takes to become an accepted SMTP message, on an idle stack.

Sends `--count` webhooks (distinct registrations, e-mail only) one at a time, `--gap` seconds
apart, to the real processes (bench.live), and reports the median and spread of
webhook-sent -> SMTP-accepted, read from the SMTP sink's receive times.

    .venv/bin/python -m bench.single_latency [--count 100] [--gap 0.2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path

import requests

from bench.live import live_stack
from bench.stack import wait_until
from tests.support.webhooks import encode, payload, signed_headers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--gap", type=float, default=0.2, help="seconds between webhooks")
    args = parser.parse_args()
    run = uuid.uuid4().hex[:6]
    sent_at: dict[str, float] = {}
    with live_stack() as stack:
        session = requests.Session()
        for n in range(args.count):
            recipient = f"single-{run}-{n}@example.org"
            body = encode(payload(f"R-{run}-{n}", email=recipient, phone=None))
            headers = signed_headers(body, secret=stack.secret)
            started = time.time()
            response = session.post(
                f"{stack.base_url}/webhooks/{stack.portal}/", data=body, headers=headers, timeout=10
            )
            assert response.status_code == 202, response.text
            sent_at[recipient] = started
            time.sleep(args.gap)

        def all_received() -> dict[str, float] | None:
            rows = [line.rstrip("\n").split("\t") for line in stack.smtp_log.open()] if stack.smtp_log.exists() else []
            found = {row[2]: float(row[0]) for row in rows if row[2] in sent_at}
            return found if len(found) == len(sent_at) else None

        arrivals = wait_until(all_received, timeout=60, what="every e-mail")
    latencies = sorted((arrivals[r] - sent_at[r]) * 1000 for r in sent_at)
    print(
        f"{len(latencies)} webhooks, one every {args.gap * 1000:.0f} ms: webhook sent -> SMTP accepted "
        f"median {statistics.median(latencies):.1f} ms, p90 {latencies[int(len(latencies) * 0.9) - 1]:.1f} ms, "
        f"min {latencies[0]:.1f} ms, max {latencies[-1]:.1f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
