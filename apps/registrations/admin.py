from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from apps.notifications.models import Notification
from apps.registrations.admin_story import AttendeeStoryMixin
from apps.registrations.failures import ReapplyRefused, webhook_event_reapply
from apps.registrations.models import ApplyReapply, FailedApply, Registration, RegistrationEvent
from apps.registrations.selectors import event_local_time
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
class RegistrationAdmin(AttendeeStoryMixin, LargeTableAdmin, ReadOnlyAdmin):
    # Fits 1400 px with the story link (support's way in, added last by the mixin) on screen.
    list_display = ("external_id", "email", "portal", "status", "role", "event_name", "event_starts")
    list_filter = ("status", ("role", fixed_values_filter(lambda: ROLES)), "portal", "event_starts_at")
    # Exact on indexed ids, partial e-mail and last name through trigram indexes (eventplatform/admin.py).
    search_fields = ("=external_id", "email", "last_name", "=event_external_id")
    list_select_related = ("portal",)
    inlines = [RegistrationEventInline, NotificationInline]
    actions = ["rebuild"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Registration]:
        return super().get_queryset(request).select_related("portal")

    def get_readonly_fields(self, request: HttpRequest, obj: object = None) -> list[str]:
        return [*super().get_readonly_fields(request, obj), "event_starts"]

    def get_fields(self, request: HttpRequest, obj: object = None) -> list[str]:
        """The event's start in its own zone, where the stored UTC value would be."""
        fields = [field for field in super().get_fields(request, obj) if field != "event_starts"]
        return ["event_starts" if field == "event_starts_at" else field for field in fields]

    @admin.display(description="event starts (event's time zone)", ordering="event_starts_at")
    def event_starts(self, registration: Registration) -> str:
        """As the attendee's e-mail says it: 09:00 (Europe/Berlin), not the stored UTC."""
        return event_local_time(registration.event_starts_at, registration.event_timezone)

    def has_rebuild_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("registrations.rebuild_registration")

    @admin.action(description="Rebuild the projection from the event log", permissions=["rebuild"])
    def rebuild(self, request: HttpRequest, queryset: QuerySet[Registration]) -> None:
        for registration in queryset:
            registration_rebuild(registration=registration)
        self.message_user(request, f"Rebuilt {queryset.count()} registration(s).")


class ResolvedFilter(admin.SimpleListFilter):
    title = "resolved"
    parameter_name = "resolved"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("no", "Not yet (waiting for staff)"), ("yes", "Resolved")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[FailedApply]) -> QuerySet[FailedApply]:
        if self.value() in ("no", "yes"):
            return queryset.filter(resolved_at__isnull=self.value() == "no")
        return queryset


class ApplyReapplyInline(admin.TabularInline):
    """The audit trail: who re-applied this event, when and why."""

    model = ApplyReapply
    fk_name = "failed_apply"
    fields = ("created_at", "actor", "via", "reason", "outbox_message_id")
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name = "re-apply (audit)"
    verbose_name_plural = "re-applies (audit)"

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: object = None) -> bool:
        """Whoever may look at the failed apply sees its audit trail."""
        return request.user.has_perm("registrations.view_failedapply")

    def get_queryset(self, request: HttpRequest) -> QuerySet[ApplyReapply]:
        return super().get_queryset(request).select_related("user")


def _event_link(event_id: object, exists: bool) -> str:
    if not exists:
        return format_html("{} (no such event)", event_id)
    return format_html('<a href="{}">{}</a>', reverse("admin:webhooks_webhookevent_change", args=[event_id]), event_id)


@admin.register(FailedApply)
class FailedApplyAdmin(ReadOnlyAdmin):
    """Accepted webhook events whose apply failed for good (docs/failures.md). Read-only; the one way
    to act on them is the `reapply` action, which needs `registrations.reapply_failedapply`."""

    list_display = ("last_failed_at", "event", "error_code", "attempts", "failures", "resolved_at", "last_reapplied_at")
    list_filter = (ResolvedFilter, "error_code", "last_failed_at")
    search_fields = ("=event_id", "=webhook_event__delivery_id")
    date_hierarchy = "last_failed_at"
    fields = (
        "event",
        "error_code",
        "error_message_block",
        "attempts",
        "failures",
        "first_failed_at",
        "last_failed_at",
        "last_reapplied_at",
        "resolved_at",
    )
    readonly_fields = fields
    inlines = [ApplyReapplyInline]
    actions = ["reapply"]

    @admin.display(description="webhook event")
    def event(self, obj: FailedApply) -> str:
        return _event_link(obj.event_id, obj.webhook_event_id is not None)

    @admin.display(description="error message")
    def error_message_block(self, obj: FailedApply) -> str:
        return format_html("<pre style='white-space: pre-wrap'>{}</pre>", obj.error_message)

    def has_reapply_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("registrations.reapply_failedapply")

    @admin.action(
        description="Re-apply the selected failed webhook events (asks for a reason)", permissions=["reapply"]
    )
    def reapply(self, request: HttpRequest, queryset: QuerySet[FailedApply]) -> TemplateResponse | None:
        """First POST: a confirmation page asking for a reason; second POST (confirm + reason): one
        outbox row and one audit record per event."""
        reason = request.POST.get("reason", "").strip()
        if request.POST.get("confirm") != "yes" or not reason:
            context = {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "queryset": queryset,
                "action_checkbox_name": ACTION_CHECKBOX_NAME,
                "reason": reason,
                "error": "Give a reason." if request.POST.get("confirm") == "yes" else "",
                "title": "Re-apply failed webhook events",
            }
            return TemplateResponse(request, "admin/registrations/failedapply/reapply_confirmation.html", context)
        queued, refused = 0, []
        for event_id in queryset.values_list("event_id", flat=True):
            try:
                webhook_event_reapply(
                    event_id=str(event_id), reason=reason, via=ApplyReapply.Via.ADMIN, user=request.user
                )
                queued += 1
            except ReapplyRefused as error:
                refused.append(error.message)
        self.message_user(
            request, f"Queued {queued} event(s) for re-apply." + (f" Refused: {'; '.join(refused)}" if refused else "")
        )
        return None


@admin.register(ApplyReapply)
class ApplyReapplyAdmin(ReadOnlyAdmin):
    """Every re-apply, as its own list: who, when, why, which event."""

    list_display = ("created_at", "actor", "via", "event", "reason")
    list_filter = ("via", "created_at")
    search_fields = ("=event_id", "user__username", "os_user", "reason")
    date_hierarchy = "created_at"

    def get_queryset(self, request: HttpRequest) -> QuerySet[ApplyReapply]:
        return super().get_queryset(request).select_related("user")

    @admin.display(description="webhook event")
    def event(self, obj: ApplyReapply) -> str:
        return format_html(
            '<a href="{}?q={}">{}</a>',
            reverse("admin:registrations_failedapply_changelist"),
            obj.event_id,
            obj.event_id,
        )
