"""Renders docs/error-codes.md from the catalogue in eventplatform.errors."""

from __future__ import annotations

from eventplatform.errors import CATALOGUE

HEADER = """# Error codes

Generated from `eventplatform/errors.py` by `python manage.py error_codes --write`; a test fails
when this file and the catalogue disagree. Every warning and error log line carries one of these
codes as `error_code`; HTTP errors carry it as `error.code`; dead notifications as
`last_error_code`.

| code | HTTP | meaning | what support should do |
|---|---|---|---|
"""


def render() -> str:
    rows = [
        f"| `{c.code}` | {c.http_status or ''} | {c.meaning} | {c.action} |"
        for c in sorted(CATALOGUE.values(), key=lambda c: c.code)
    ]
    return HEADER + "\n".join(rows) + "\n"
