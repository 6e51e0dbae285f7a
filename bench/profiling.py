"""py-spy on the benchmark's processes (`bench/run.py --profile`): where their CPU goes.

py-spy samples each process from outside (`--nonblocking`: the target is never paused) and only
threads holding the GIL (`--gil`), so the samples are Python CPU time, not time spent waiting for
PostgreSQL, RabbitMQ or a socket. The collapsed stacks are summarised as self time per function,
self time per top-level package, and inclusive time per function.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

FRAME = re.compile(r"^(?P<function>.*) \((?P<path>[^()]*?)(?::\d+)?\)$")


def py_spy() -> str:
    return shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")


class Spy:
    """py-spy record on several processes at once, for a fixed number of seconds."""

    def __init__(self, pids: list[int], out_dir: Path, label: str, seconds: float, rate: int = 100) -> None:
        self.outputs: list[Path] = []
        self.processes: list[subprocess.Popen[bytes]] = []
        self.seconds = seconds
        for pid in pids:
            out = out_dir / f"py-spy-{label}-{pid}.txt"
            self.outputs.append(out)
            self.processes.append(
                subprocess.Popen(
                    [
                        py_spy(),
                        "record",
                        "--pid",
                        str(pid),
                        "--rate",
                        str(rate),
                        "--duration",
                        str(max(1, int(seconds))),
                        "--format",
                        "raw",
                        "--nonblocking",
                        "--gil",
                        "--output",
                        str(out),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )

    def finish(self) -> Counter[str]:
        """Wait for every py-spy (they stop by themselves) and merge their collapsed stacks."""
        for process in self.processes:
            try:
                process.wait(timeout=self.seconds + 30)
            except subprocess.TimeoutExpired:
                process.kill()  # our own py-spy, by its Popen handle
                process.wait()
        stacks: Counter[str] = Counter()
        for out in self.outputs:
            if out.exists():
                for line in out.read_text().splitlines():
                    stack, _, count = line.rpartition(" ")
                    if stack and count.isdigit():
                        stacks[stack] += int(count)
        return stacks


def _split(frame: str) -> tuple[str, str]:
    match = FRAME.match(frame)
    if not match:
        return frame, "?"
    return f"{match['function']} ({match['path']})", match["path"]


def _package(path: str) -> str:
    if path.startswith("<"):
        return "python"
    head = path.split("/")[0]
    return head.removesuffix(".py")


def summarize(stacks: Counter[str], top: int = 30) -> dict[str, Any]:
    """Shares (%) of all samples: self time per function and per package, inclusive per function."""
    total = sum(stacks.values())
    if not total:
        return {"samples": 0}
    own: Counter[str] = Counter()
    package: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for stack, count in stacks.items():
        frames = [_split(f) for f in stack.split(";")]
        leaf, path = frames[-1]
        own[leaf] += count
        package[_package(path)] += count
        for name in {name for name, _ in frames}:
            inclusive[name] += count

    def share(counter: Counter[str], n: int) -> list[tuple[str, float]]:
        return [(name, round(100 * count / total, 1)) for name, count in counter.most_common(n)]

    return {
        "samples": total,
        "self_by_package": share(package, 15),
        "self_top": share(own, top),
        "inclusive_top": share(inclusive, top + 20),
    }


def write_collapsed(stacks: Counter[str], path: Path) -> None:
    """The merged stacks in the collapsed format flamegraph tools read."""
    path.write_text("".join(f"{stack} {count}\n" for stack, count in stacks.most_common()))
