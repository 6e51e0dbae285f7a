"""Production: what `manage.py` and `eventplatform.wsgi` use unless another module is chosen.

No insecure or embedded default survives here: every variable below must be set, and a missing
one stops the process at start with one message naming all of them (not one per restart).
"""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured

from eventplatform.encryption import key_from_secret_key, parse_keys
from eventplatform.settings.base import *  # noqa: F403
from eventplatform.settings.base import DEVELOPMENT_WEBHOOK_SECRETS_KEY, env, https_only_settings

REQUIRED = ("SECRET_KEY", "DATABASE_URL", "BROKER_URL", "EMAIL_URL", "ALLOWED_HOSTS")
# The placeholders of .env.example and base.py count as missing: a copied example is not a secret.
PLACEHOLDER_SECRET_KEYS = {"change-me", "dev-only-insecure-key-change-me"}

_missing = [name for name in REQUIRED if not env.str(name, default="").strip()]
if "SECRET_KEY" not in _missing and env.str("SECRET_KEY") in PLACEHOLDER_SECRET_KEYS:
    _missing.insert(0, "SECRET_KEY (not the example's placeholder)")
if DEVELOPMENT_WEBHOOK_SECRETS_KEY in env.list("WEBHOOK_SECRETS_KEY", default=[]):
    _missing.append("WEBHOOK_SECRETS_KEY (not the public development key)")
if _missing:
    raise ImproperlyConfigured(
        f"Production settings (eventplatform.settings.production) need {', '.join(_missing)}: set "
        f"{'it' if len(_missing) == 1 else 'them'} in the environment (see .env.example and docs/deploy.md), "
        "or choose DJANGO_SETTINGS_MODULE=eventplatform.settings.development for the embedded local defaults."
    )

SECRET_KEY = env.str("SECRET_KEY")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS")
DEBUG = False
# Unset: derived from SECRET_KEY (CONTRACT section 2 names SECRET_KEY as production's one secret; a
# dump still forges nothing without the environment). Set it to rotate the two independently.
WEBHOOK_SECRETS_KEY = env.str("WEBHOOK_SECRETS_KEY", default="").strip() or key_from_secret_key(SECRET_KEY)
parse_keys(WEBHOOK_SECRETS_KEY)  # a malformed key stops the process now, not at the first webhook

# HTTPS only, whether TLS ends at a proxy (BEHIND_TLS_PROXY=true) or at gunicorn itself (--certfile):
# `check --deploy` is clean without any switch. Plain HTTP when asked for by name, or when the server
# answers only to loopback names (ALLOWED_HOSTS all 127.0.0.1/localhost/::1: nothing it serves
# crosses a network, and a trial on one machine works as it did); `check --deploy` then warns.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
SERVES_LOOPBACK_ONLY = all(host.strip().lower() in LOOPBACK_HOSTS for host in ALLOWED_HOSTS)
ALLOW_PLAIN_HTTP = env.bool("ALLOW_PLAIN_HTTP", default=SERVES_LOOPBACK_ONLY)
if not ALLOW_PLAIN_HTTP:
    vars().update(https_only_settings())
