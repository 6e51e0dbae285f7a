from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from apps.notifications.models import CircuitBreaker, Notification, NotificationAttempt
from apps.notifications.services import notification_replay
from eventplatform.admin import ErrorCodeListFilter, LargeTableAdmin, ReadOnlyAdmin, fixed_values_filter


class NotificationAttemptInline(admin.TabularInline):
    model = NotificationAttempt
    fields = ("number", "started_at", "duration_ms", "outcome", "provider", "error_code", "error_message",
              "provider_message_id")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Notification)
class NotificationAdmin(LargeTableAdmin, ReadOnlyAdmin):
    """"Which e-mails failed since 9:00?": filter by status, channel and updated_at."""

    list_display = ("created_at", "kind", "channel", "status", "attempts", "last_error_code", "registration",
                    "updated_at", "id")
    list_filter = ("status", "channel", "kind", ("last_error_code", ErrorCodeListFilter), "updated_at", "created_at")
    # Exact on indexed columns, partial e-mail/phone through a trigram index (eventplatform/admin.py).
    search_fields = ("=id", "=correlation_id", "=registration__external_id", "recipient")
    list_select_related = ("registration",)
    inlines = [NotificationAttemptInline]
    actions = ["replay"]
    exclude = ("context",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Notification]:
        # context holds the whole registration snapshot: only the detail page needs it.
        return super().get_queryset(request).select_related("registration").defer("context")

    @admin.action(description="Replay: send the selected dead notifications again")
    def replay(self, request: HttpRequest, queryset: QuerySet[Notification]) -> None:
        replayed = sum(notification_replay(notification_id=pk) for pk in queryset.values_list("id", flat=True))
        self.message_user(request, f"Queued {replayed} notification(s) for sending; only dead ones are replayed.")


@admin.register(NotificationAttempt)
class NotificationAttemptAdmin(LargeTableAdmin, ReadOnlyAdmin):
    list_display = ("started_at", "notification", "number", "outcome", "provider", "error_code", "duration_ms")
    # Every provider that was ever asked has a breaker row: its choices, without DISTINCT over attempts.
    list_filter = ("outcome", ("provider", fixed_values_filter(
        lambda: CircuitBreaker.objects.order_by("provider").values_list("provider", flat=True))),
        ("error_code", ErrorCodeListFilter), "started_at")
    search_fields = ("=notification__id", "=provider_message_id")


@admin.register(CircuitBreaker)
class CircuitBreakerAdmin(ReadOnlyAdmin):
    """Which provider is held back and since when: the truth behind the breaker gauge, which an idle
    worker process may report stale. Read-only: the breakers close themselves after a good probe."""

    list_display = ("provider", "state", "consecutive_failures", "opened_at", "probe_claimed_at", "updated_at")
    list_filter = ("state",)
