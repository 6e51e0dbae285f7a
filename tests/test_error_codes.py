"""No error code is emitted that the catalogue (and so docs/error-codes.md) does not list."""

from __future__ import annotations

import re
from pathlib import Path

from eventplatform.error_codes_doc import render
from eventplatform.errors import CATALOGUE, EventPlatformError

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [p for d in ("apps", "eventplatform") for p in (ROOT / d).rglob("*.py") if "migrations" not in p.parts]
# code="x" / error_code="x" / error_response("x" / class attribute `code = "x"`
PATTERNS = [
    re.compile(r"""\b(?:error_)?code\s*=\s*["']([a-z_]+)["']"""),
    re.compile(r"""error_response\(\s*["']([a-z_]+)["']"""),
]


def codes_used_in_source() -> set[str]:
    found = set()
    for path in SOURCES:
        text = path.read_text()
        for pattern in PATTERNS:
            found.update(pattern.findall(text))
    return found


def test_every_code_used_in_the_code_base_is_in_the_catalogue() -> None:
    used = codes_used_in_source()
    assert len(used) > 10, "the scan found too little to be trusted"
    assert used - set(CATALOGUE) == set()


def test_every_exception_class_code_is_in_the_catalogue() -> None:
    def subclasses(cls: type) -> list[type]:
        return [cls] + [s for sub in cls.__subclasses__() for s in subclasses(sub)]

    # Imported for the subclasses they define.
    import apps.notifications.errors
    import apps.registrations.services
    import apps.webhooks.signature  # noqa: F401

    classes = subclasses(EventPlatformError)
    assert len(classes) > 3
    assert {cls.code for cls in classes} <= set(CATALOGUE)


def test_docs_error_codes_md_is_generated_from_the_catalogue() -> None:
    assert (ROOT / "docs" / "error-codes.md").read_text() == render(), (
        "docs/error-codes.md is stale: run `python manage.py error_codes --write`"
    )
