"""An SMTP server that accepts every message at once and records when it got it.

Runs as its own process (aiosmtpd on a plain asyncio loop), so parsing and recording never share a
GIL with the harness or the workers. One line per accepted recipient is appended to `--out`:

    <unix time received>\t<X-Eventplatform-Notification-Id or ->\t<recipient>

flushed every 50 ms, so the harness can follow it while a phase runs.

    python -m bench.smtp_sink --port 2525 --out received.tsv
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import signal
import time
from typing import Any, TextIO

from aiosmtpd.smtp import SMTP

NOTIFICATION_HEADER = re.compile(rb"^X-Eventplatform-Notification-Id:[ \t]*([^\r\n]+)", re.MULTILINE | re.IGNORECASE)


class RecordingHandler:
    def __init__(self, out: TextIO) -> None:
        self.out = out

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        received = time.time()
        content = envelope.original_content or envelope.content
        if isinstance(content, str):
            content = content.encode()
        head = content.split(b"\r\n\r\n", 1)[0]
        match = NOTIFICATION_HEADER.search(head)
        notification_id = match.group(1).decode(errors="replace").strip() if match else "-"
        for recipient in envelope.rcpt_tos:
            self.out.write(f"{received:.6f}\t{notification_id}\t{recipient}\n")
        return "250 Message accepted for delivery"


async def serve(port: int, out: TextIO) -> None:
    loop = asyncio.get_running_loop()
    handler = RecordingHandler(out)
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="bench-sink", ident="bench-sink"), "127.0.0.1", port
    )
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"smtp sink listening on 127.0.0.1:{port}", flush=True)
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=0.05)
        except TimeoutError:
            pass
        out.flush()
    server.close()
    out.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with open(args.out, "a", buffering=1 << 16) as out:
        asyncio.run(serve(args.port, out))


if __name__ == "__main__":
    main()
