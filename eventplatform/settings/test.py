"""Test settings: the real PostgreSQL and RabbitMQ on loopback (see tests/conftest.py)."""

from __future__ import annotations

import os

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/eventplatform")
os.environ.setdefault("EMAIL_URL", "memorymail://")
# Fixed, and not the development key, so child processes started with production settings (which
# refuse the development key) inherit it and read the secrets this run stored.
os.environ.setdefault("WEBHOOK_SECRETS_KEY", "gnbQwpjRTcq2XwwUxbQPXvvddOLzCV7QF0A1w1tjwac=")

from eventplatform.settings.base import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
