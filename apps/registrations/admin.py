from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from apps.notifications.models import Notification
from apps.registrations.models import Registration, RegistrationEvent
from apps.registrations.services import registration_rebuild
from apps.webhooks.serializers import ROLES
from eventplatform.admin import LargeTableAdmin, ReadOnlyAdmin, fixed_values_filter


class RegistrationEventInline(admin.TabularInline):
    model = RegistrationEvent
    fields = ("version", "type", "occurred_at", "webhook_event", "recorded_at")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class NotificationInline(admin.TabularInline):
    model = Notification
    fields = ("kind", "channel", "status", "attempts", "last_error_code", "sent_at", "id")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Registration)
class RegistrationAdmin(LargeTableAdmin, ReadOnlyAdmin):
    list_display = ("external_id", "portal", "status", "role", "event_name", "event_starts_at", "version",
                    "updated_at")
    list_filter = ("status", ("role", fixed_values_filter(lambda: ROLES)), "portal", "event_starts_at")
    # Exact on indexed ids, partial e-mail and last name through trigram indexes (eventplatform/admin.py).
    search_fields = ("=external_id", "email", "last_name", "=event_external_id")
    list_select_related = ("portal",)
    inlines = [RegistrationEventInline, NotificationInline]
    actions = ["rebuild"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Registration]:
        return super().get_queryset(request).select_related("portal")

    @admin.action(description="Rebuild the projection from the event log")
    def rebuild(self, request: HttpRequest, queryset: QuerySet[Registration]) -> None:
        for registration in queryset:
            registration_rebuild(registration=registration)
        self.message_user(request, f"Rebuilt {queryset.count()} registration(s).")
