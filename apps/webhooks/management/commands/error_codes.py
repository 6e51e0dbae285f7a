from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from eventplatform.error_codes_doc import render


class Command(BaseCommand):
    help = "Print the error-code catalogue as Markdown, or write it to docs/error-codes.md."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--write", action="store_true", help="Write docs/error-codes.md.")

    def handle(self, *args: Any, **options: Any) -> None:
        text = render()
        if options["write"]:
            path = Path(settings.BASE_DIR) / "docs" / "error-codes.md"
            path.write_text(text)
            self.stdout.write(f"wrote {path}")
        else:
            self.stdout.write(text)
