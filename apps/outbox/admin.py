from __future__ import annotations

import dramatiq
from django.contrib import admin

from apps.outbox.models import OutboxMessage
from eventplatform.actors import actor_modules_import
from eventplatform.admin import LargeTableAdmin, ReadOnlyAdmin, fixed_values_filter


def _actor_names() -> list[str]:
    """Every actor an outbox row can name (the web process imports the tasks modules only here)."""
    actor_modules_import()
    return sorted(dramatiq.get_broker().get_declared_actors())


@admin.register(OutboxMessage)
class OutboxMessageAdmin(LargeTableAdmin, ReadOnlyAdmin):
    list_display = ("created_at", "actor_name", "queue_name", "available_at", "published_at", "id")
    list_filter = (("actor_name", fixed_values_filter(_actor_names)), ("published_at", admin.EmptyFieldListFilter))
    search_fields = ("=id",)
