"""`.env.example` lists every variable the settings read (CONTRACT section 2)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_env_example_lists_every_setting_read_from_the_environment() -> None:
    read = set()
    for path in (ROOT / "eventplatform" / "settings").glob("*.py"):
        read |= set(re.findall(r'env(?:\.\w+)?\(\s*"([A-Za-z_]+)"', path.read_text()))
    listed = set(re.findall(r"^#?\s?([A-Za-z_]+)=", (ROOT / ".env.example").read_text(), re.MULTILINE))
    assert len(read) > 20
    assert read - listed == set()
