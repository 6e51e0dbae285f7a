"""The web process's application (`gunicorn eventplatform.wsgi`). Production settings unless
DJANGO_SETTINGS_MODULE chooses another module: missing production variables stop the server at
start, with one message naming them all."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "eventplatform.settings.production")
application = get_wsgi_application()
