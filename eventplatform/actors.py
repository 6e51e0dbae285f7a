"""Loading the actors: every app's `tasks` module, as `rundramatiq` does."""

from __future__ import annotations

import importlib

from django.apps import apps
from django.conf import settings
from django.utils.module_loading import module_has_submodule


def actor_modules_import() -> None:
    """Import the tasks module of every installed app except DRAMATIQ_IGNORED_MODULES (django_dramatiq's
    own `delete_old_tasks` belongs to its Task model, which we do not use), so that this process's
    broker declares the same actors and queues as the workers."""
    ignored = set(settings.DRAMATIQ_IGNORED_MODULES)
    for config in apps.get_app_configs():
        name = f"{config.name}.tasks"
        if name not in ignored and module_has_submodule(config.module, "tasks"):
            importlib.import_module(name)
