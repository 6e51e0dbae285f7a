from __future__ import annotations

import dramatiq
from django.contrib import admin

from apps.outbox.models import OutboxMessage
from eventplatform.admin import LargeTableAdmin, ReadOnlyAdmin, fixed_values_filter


@admin.register(OutboxMessage)
class OutboxMessageAdmin(LargeTableAdmin, ReadOnlyAdmin):
    list_display = ("created_at", "actor_name", "queue_name", "available_at", "published_at", "id")
    list_filter = (("actor_name", fixed_values_filter(lambda: sorted(dramatiq.get_broker().get_declared_actors()))),
                   ("published_at", admin.EmptyFieldListFilter))
    search_fields = ("=id",)
