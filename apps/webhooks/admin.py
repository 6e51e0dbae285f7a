from __future__ import annotations

import json

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from apps.webhooks.models import Portal, PortalSecret, WebhookEvent
from apps.webhooks.serializers import EVENT_TYPES
from eventplatform.admin import LargeTableAdmin, ReadOnlyAdmin, fixed_values_filter


class PortalSecretInline(admin.TabularInline):
    model = PortalSecret
    extra = 0
    fields = ("secret", "active", "created_at")
    readonly_fields = ("created_at",)


@admin.register(Portal)
class PortalAdmin(admin.ModelAdmin):
    list_display = ("slug", "name", "active", "rate_limit_per_minute", "created_at")
    list_filter = ("active",)
    search_fields = ("slug", "name")
    inlines = [PortalSecretInline]


@admin.register(WebhookEvent)
class WebhookEventAdmin(LargeTableAdmin, ReadOnlyAdmin):
    list_display = ("received_at", "portal", "type", "status", "delivery_id", "id")
    list_filter = ("status", ("type", fixed_values_filter(lambda: EVENT_TYPES)), "portal", "received_at")
    search_fields = ("=id", "=delivery_id")
    list_select_related = ("portal",)
    readonly_fields = ("id", "portal", "delivery_id", "type", "status", "received_at", "pretty_payload", "errors")
    exclude = ("raw_body", "payload")

    def get_queryset(self, request: HttpRequest) -> QuerySet[WebhookEvent]:
        # The raw body and payload can be large; the list never shows them.
        return super().get_queryset(request).select_related("portal").defer("raw_body", "payload")

    @admin.display(description="payload")
    def pretty_payload(self, obj: WebhookEvent) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.payload, indent=2, ensure_ascii=False))
