#!/usr/bin/env python
"""Django's command line. Production settings unless DJANGO_SETTINGS_MODULE chooses another module
(`eventplatform.settings.development` for local work, `.test` for the suite): a deploy that forgets
a variable stops with one message naming it instead of running on the embedded defaults."""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "eventplatform.settings.production")
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    try:
        settings.INSTALLED_APPS  # noqa: B018 - loads the settings module: its refusal is the message
    except ImproperlyConfigured as refusal:
        sys.exit(str(refusal))
    execute_from_command_line(sys.argv)
