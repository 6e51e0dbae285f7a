"""Development on one machine: `make run`, the bench and local commands choose this explicitly.

The embedded defaults of base apply (SQLite file + in-process broker + console e-mail unless
DATABASE_URL / BROKER_URL / EMAIL_URL are set, a public SECRET_KEY, loopback hosts). Never the
default of an entry point: `manage.py` and `eventplatform.wsgi` default to production.
"""

from __future__ import annotations

from eventplatform.settings.base import *  # noqa: F403

# Logs for a person at a terminal (LOG_FORMAT=json still chooses JSON lines).
if "LOG_FORMAT" not in env:  # noqa: F405
    LOG_FORMAT = "console"
    LOGGING["formatters"]["structured"]["log_format"] = "console"  # noqa: F405
