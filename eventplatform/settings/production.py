"""Production: no insecure defaults; a missing secret stops the process at start."""

from __future__ import annotations

from eventplatform.settings.base import *  # noqa: F401,F403
from eventplatform.settings.base import env

SECRET_KEY = env.str("SECRET_KEY")
DEBUG = False
SECURE_CONTENT_TYPE_NOSNIFF = True
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=True)
