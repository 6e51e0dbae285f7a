from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.validators import EmailValidator, RegexValidator
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme

from apps.notifications import (
    channels,
    classification,
    template_admin,  # noqa: F401 - registers the wording admin (MessageTemplate)
)
from apps.notifications.delivery import suppression_add, suppression_lift
from apps.notifications.models import (
    CircuitBreaker,
    MessageTemplateVersion,
    Notification,
    NotificationAttempt,
    NotificationReplay,
    NotificationReport,
    Suppression,
)
from apps.notifications.selectors import notification_replay_summary, suppression_active, suppression_address
from apps.notifications.services import REPLAYABLE, REPLAYABLE_IF_SENT, notification_replay
from eventplatform.admin import LargeTableAdmin, ReadOnlyAdmin, fixed_values_filter

REPLAY_PERMISSION = "notifications.replay_notification"
LIFT_PERMISSION = "notifications.lift_suppression"
Status = Notification.Status
# What the send path records itself, beside the classification's rows (a failure of ours, an address
# we cannot use or may not write to, a breaker or the retries giving up).
SEND_PATH_ERROR_CODES = (
    "actor_failed",
    "address_suppressed",
    "circuit_open",
    "invalid_recipient",
    "retries_exhausted",
    "sms_not_configured",
)


def notification_error_codes() -> list[str]:
    """The codes a notification or an attempt can carry: the classification's table and the send
    path's own, as the catalogue declares them (webhook-only codes such as invalid_signature are not)."""
    from eventplatform.errors import CATALOGUE

    codes = {rule.error_code for rule in (*channels.rules(), classification.UNCLASSIFIED)}
    return sorted(code for code in codes | set(SEND_PATH_ERROR_CODES) if code in CATALOGUE)


NotificationErrorCodeFilter = fixed_values_filter(notification_error_codes)


def _safe_next(request: HttpRequest) -> str | None:
    """The page a replay was started from (the attendee's story), to return to after it."""
    target = request.POST.get("next") or request.GET.get("next")
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return None


class ReplayForm(forms.Form):
    reason = forms.CharField(
        max_length=1000,
        strip=True,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 80}),
        help_text='Why these are sent again (e.g. "mail server fixed, ticket 4711"); kept in the replay audit.',
    )
    include_sent = forms.BooleanField(
        required=False,
        label="Also send again the ones already sent",
        help_text="Only for notifications named one by one; the attendee gets a second message.",
    )


class NotificationAttemptInline(admin.TabularInline):
    model = NotificationAttempt
    fields = (
        "number",
        "started_at",
        "duration_ms",
        "outcome",
        "provider",
        "error_code",
        "error_message",
        "provider_message_id",
    )
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class _NotificationHistoryInline(admin.TabularInline):
    """A read-only part of the notification's page: whoever may see the notification sees it."""

    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return request.user.has_perm("notifications.view_notification")


class NotificationReportInline(_NotificationHistoryInline):
    """What the mail system or carrier reported after `sent` (delivery.py), oldest first."""

    model = NotificationReport
    fields = ("received_at", "source", "outcome", "permanent", "status_code", "diagnostic", "details", "applied")
    readonly_fields = fields
    verbose_name = "delivery report"
    verbose_name_plural = "delivery reports (after sent)"


class NotificationReplayInline(_NotificationHistoryInline):
    """Who replayed this notification, when and why (CONTRACT section 7)."""

    model = NotificationReplay
    fields = ("replayed_at", "actor", "reason", "previous_status", "previous_error_code", "previous_attempts")
    readonly_fields = fields
    verbose_name = "replay"
    verbose_name_plural = "replays (audit)"


@admin.register(Notification)
class NotificationAdmin(LargeTableAdmin, ReadOnlyAdmin):
    """ "Which e-mails failed since 9:00?": filter by status, channel and updated_at.

    Replay (single, selected rows, or every dead row matching the filters) needs the permission
    `notifications.replay_notification`, goes through a confirmation page that asks for a reason, and
    leaves one NotificationReplay row per notification sent again.
    """

    list_display = (
        "created_at",
        "kind",
        "channel",
        "status",
        "attempts",
        "last_error_code",
        "registration",
        "updated_at",
        "id",
    )
    list_filter = (
        "status",
        "channel",
        "kind",
        ("last_error_code", NotificationErrorCodeFilter),
        "updated_at",
        "created_at",
    )
    # Exact on indexed columns, partial e-mail/phone through a trigram index (eventplatform/admin.py).
    search_fields = ("=id", "=correlation_id", "=registration__external_id", "recipient")
    list_select_related = ("registration",)
    inlines = [NotificationAttemptInline, NotificationReportInline, NotificationReplayInline]
    actions = ["replay_notifications"]
    exclude = ("context", "template_version")
    readonly_fields = ("wording",)

    @admin.display(description="wording")
    def wording(self, obj: Notification) -> str:
        """The template version it was sent with (recorded with `sent`)."""
        if obj.template_version_id is None:
            return "shipped default" if obj.sent_at else "not sent yet (recorded when sent)"
        version = MessageTemplateVersion.objects.select_related("template").get(id=obj.template_version_id)
        url = reverse("admin:notifications_messagetemplate_change", args=[version.template_id])
        return format_html('<a href="{}">version {} of {}</a>', url, version.number, version.template)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Notification]:
        # context holds the whole registration snapshot: only the detail page needs it.
        return super().get_queryset(request).select_related("registration").defer("context")

    def has_replay_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(REPLAY_PERMISSION)

    def get_urls(self) -> list[Any]:
        return [
            path("replay/", self.admin_site.admin_view(self.replay_view), name="notifications_notification_replay"),
            *super().get_urls(),
        ]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        extra_context = {**(extra_context or {}), "can_replay": self.has_replay_permission(request)}
        return super().changelist_view(request, extra_context)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        extra_context = {
            **(extra_context or {}),
            "can_replay": self.has_replay_permission(request),
            "replayable_statuses": [*REPLAYABLE, *REPLAYABLE_IF_SENT],
        }
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.action(
        description="Replay: send the selected notifications again (asks for a reason)", permissions=["replay"]
    )
    def replay_notifications(self, request: HttpRequest, queryset: QuerySet[Notification]) -> HttpResponse | None:
        if request.POST.get("select_across") == "1":
            # "Select all N": every row matching the filters; the replay page recomputes them from the
            # query string (dead ones only) rather than carrying thousands of ids through a form.
            return HttpResponseRedirect(
                f"{reverse('admin:notifications_notification_replay')}?{request.GET.urlencode()}"
            )
        hidden = [("action", "replay_notifications")] + [
            (helpers.ACTION_CHECKBOX_NAME, str(pk)) for pk in queryset.values_list("id", flat=True)
        ]
        return self._replay(request, queryset, named=True, hidden=hidden, done_url=None)

    def replay_view(self, request: HttpRequest) -> HttpResponse:
        """`?notification=<id>`: one named notification (its page's button), dead or, on request, sent.
        Any other query string is the changelist's filters: every *dead* notification they match."""
        if not self.has_replay_permission(request):
            raise PermissionDenied
        named_id = request.GET.get("notification")
        if named_id:
            try:
                uuid.UUID(named_id)
            except ValueError:
                raise Http404("not a notification id") from None
            queryset = Notification.objects.filter(id=named_id)
            done_url = _safe_next(request) or reverse("admin:notifications_notification_change", args=[named_id])
            return self._replay(request, queryset, named=True, hidden=[], done_url=done_url)
        try:
            changelist = self.get_changelist_instance(request)
        except IncorrectLookupParameters:
            self.message_user(request, "Those list filters are not valid; nothing was replayed.", messages.ERROR)
            return HttpResponseRedirect(reverse("admin:notifications_notification_changelist"))
        queryset = changelist.get_queryset(request)
        done_url = f"{reverse('admin:notifications_notification_changelist')}?{request.GET.urlencode()}"
        return self._replay(request, queryset, named=False, hidden=[], done_url=done_url)

    def _replay(
        self,
        request: HttpRequest,
        queryset: QuerySet[Notification],
        *,
        named: bool,
        hidden: list[tuple[str, str]],
        done_url: str | None,
    ) -> HttpResponse | None:
        """The confirmation page (how many, which kinds/channels/statuses, a required reason), then the replay.

        Each notification is replayed in its own transaction with its audit row: a failure half-way
        leaves the ones before it replayed and audited, and the page says how many were queued.
        """
        queryset = queryset.order_by()
        # Named: what never reached the attendee, and on request what did; by filter: dead only.
        unsent = REPLAYABLE if named else (Status.DEAD,)
        replayable = [*unsent, *(REPLAYABLE_IF_SENT if named else ())]
        form = ReplayForm(request.POST if "confirm" in request.POST else None)
        if form.is_valid():
            include_sent = named and form.cleaned_data["include_sent"]
            statuses = [*unsent, *(REPLAYABLE_IF_SENT if include_sent else ())]
            if named and not include_sent and not queryset.filter(status__in=unsent).exists():
                # Only sent ones named: replaying none of them and saying "Queued 0" in green misleads.
                form.add_error(
                    "include_sent",
                    "Nothing was replayed: these were already sent. Tick “"
                    f"{ReplayForm.base_fields['include_sent'].label}” to send them again.",
                )
        if form.is_valid():
            queued, refused = 0, Counter[tuple[str, str]]()
            for pk in queryset.filter(status__in=statuses).values_list("id", flat=True).iterator():
                result = notification_replay(
                    notification_id=pk, reason=form.cleaned_data["reason"], user=request.user, include_sent=include_sent
                )
                queued += result.queued
                if result.refused:
                    refused[(result.refused, result.message)] += 1
            if queued or not refused:  # all refused: the warnings below say why, no green "Queued 0"
                self.message_user(
                    request,
                    f"Queued {queued} notification(s) for sending again; each replay is "
                    "recorded with your name and reason.",
                    messages.SUCCESS if queued else messages.WARNING,
                )
            for (code, message), count in sorted(refused.items()):
                self.message_user(request, f"Not queued: {count} notification(s), {code}: {message}", messages.WARNING)
            return HttpResponseRedirect(done_url) if done_url else None
        summary = notification_replay_summary(queryset)
        for group in summary["groups"]:
            group["replayed"] = (
                "yes" if group["status"] in unsent else "only if ticked below" if group["status"] in replayable else ""
            )
        counts = {
            "unsent": sum(g["count"] for g in summary["groups"] if g["status"] in unsent),
            "sent": sum(g["count"] for g in summary["groups"] if g["status"] in REPLAYABLE_IF_SENT),
        }
        context = {
            **self.admin_site.each_context(request),
            "title": "Replay notifications: are you sure?",
            "opts": self.model._meta,
            "summary": summary,
            "dead": counts["unsent"],
            "sent": counts["sent"] if named else 0,
            "left_alone": summary["total"] - counts["unsent"] - (counts["sent"] if named else 0),
            "named": named,
            "form": form,
            "hidden": hidden,
            "filters": "" if named else request.GET.urlencode(),
            "next": _safe_next(request) or "",
        }
        return TemplateResponse(request, "admin/notifications/notification/replay_confirmation.html", context)


@admin.register(NotificationReplay)
class NotificationReplayAdmin(ReadOnlyAdmin):
    """The replay audit: every replay by staff or by `replay_notifications`, newest first."""

    list_display = (
        "replayed_at",
        "actor",
        "actor_type",
        "notification",
        "previous_status",
        "previous_error_code",
        "reason",
    )
    list_filter = ("actor_type", "previous_status", "replayed_at")
    search_fields = ("=notification__id", "actor", "reason")
    date_hierarchy = "replayed_at"
    list_select_related = ("notification",)


@admin.register(NotificationAttempt)
class NotificationAttemptAdmin(LargeTableAdmin, ReadOnlyAdmin):
    list_display = ("started_at", "notification", "number", "outcome", "provider", "error_code", "duration_ms")
    # Every provider that was ever asked has a breaker row: its choices, without DISTINCT over attempts.
    list_filter = (
        "outcome",
        (
            "provider",
            fixed_values_filter(lambda: CircuitBreaker.objects.order_by("provider").values_list("provider", flat=True)),
        ),
        ("error_code", NotificationErrorCodeFilter),
        "started_at",
    )
    search_fields = ("=notification__id", "=provider_message_id")


@admin.register(CircuitBreaker)
class CircuitBreakerAdmin(ReadOnlyAdmin):
    """Which provider is held back and since when: the truth behind the breaker gauge, which an idle
    worker process may report stale. Read-only: the breakers close themselves after a good probe."""

    list_display = (
        "provider",
        "state",
        "reason",
        "consecutive_failures",
        "opened_at",
        "misconfigured_since",
        "probe_claimed_at",
        "updated_at",
    )
    list_filter = ("state",)


_E164 = RegexValidator(r"^\+[1-9]\d{6,14}$", "A phone number in E.164 form, e.g. +4915112345678.")


class SuppressionAddForm(forms.ModelForm):
    """Suppress an address by hand (reason `manual`): an attendee asked by phone not to be written to."""

    class Meta:
        model = Suppression
        fields = ("channel", "address", "note")
        help_texts = {
            "address": "The e-mail address (compared whatever its case) or the number in E.164 form.",
            "note": "Why (kept with the suppression), e.g. “asked by phone, ticket 4711”.",
        }

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        channel, address = data.get("channel"), (data.get("address") or "").strip()
        if not channel or not address:
            return data
        validator = _E164 if channel == Notification.Channel.SMS else EmailValidator()
        try:
            validator(suppression_address(channel=channel, address=address))
        except ValidationError as error:
            self.add_error("address", error)
            return data
        existing = suppression_active(channel=channel, address=address)
        if existing is not None:
            self.add_error(
                "address", f"Already suppressed since {existing.created_at:%Y-%m-%d %H:%M} UTC ({existing.reason})."
            )
        data["address"] = suppression_address(channel=channel, address=address)
        return data


class LiftForm(forms.Form):
    reason = forms.CharField(
        max_length=1000,
        strip=True,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 80}),
        help_text="Why sending to it again is right (e.g. “mailbox fixed, confirmed by phone”); kept with "
        "the suppression, with your name.",
    )


class ActiveFilter(admin.SimpleListFilter):
    title = "active"
    parameter_name = "active"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Active"), ("no", "Lifted")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Suppression]) -> QuerySet[Suppression]:
        if self.value() in ("yes", "no"):
            return queryset.filter(lifted_at__isnull=self.value() == "yes")
        return queryset


@admin.register(Suppression)
class SuppressionAdmin(admin.ModelAdmin):
    """The addresses and numbers we do not send to (CONTRACT sections 6 and 8): search by address,
    see what caused it, add one by hand (reason `manual`), lift with a reason (permission
    `notifications.lift_suppression`; the lift is kept on the row: who, when, why). Rows are never
    edited or deleted: a lifted one stays as history."""

    list_display = (
        "address",
        "channel",
        "reason",
        "is_active",
        "created_at",
        "source",
        "cause",
        "created_by_name",
        "lifted_at",
        "lifted_by_name",
    )
    list_filter = ("reason", ActiveFilter, "channel", "created_at")
    search_fields = ("address",)
    actions = ["lift_suppressions"]
    readonly_fields = (
        "channel",
        "address",
        "reason",
        "created_at",
        "source",
        "cause",
        "note",
        "created_by_name",
        "lifted_at",
        "lifted_by_name",
        "lift_reason",
    )

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Suppression], search_term: str
    ) -> tuple[QuerySet[Suppression], bool]:
        # Stored lower-cased (e-mail) or in E.164: a search typed as the attendee spelt it still finds it.
        return super().get_search_results(request, queryset, search_term.strip().lower().replace(" ", ""))

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = SuppressionAddForm
        return super().get_form(request, obj, change, **kwargs)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.readonly_fields if obj is not None else ()

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.readonly_fields if obj is not None else ("channel", "address", "note")

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False  # a suppression is added or lifted, never edited

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False  # lifting keeps the history; deleting would lose who suppressed it and why

    def has_lift_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(LIFT_PERMISSION)

    @admin.display(boolean=True, description="active")
    def is_active(self, suppression: Suppression) -> bool:
        return suppression.active

    @admin.display(description="caused by")
    def cause(self, suppression: Suppression) -> str:
        if suppression.notification_id is None:
            return "-"
        return format_html(
            '<a href="{}">notification</a>',
            reverse("admin:notifications_notification_change", args=[suppression.notification_id]),
        )

    def save_model(self, request: HttpRequest, obj: Suppression, form: Any, change: bool) -> None:
        """By hand: through the service (reason `manual`, created_by), never a bare save()."""
        suppression, _ = suppression_add(
            channel=obj.channel,
            address=obj.address,
            reason=Suppression.Reason.MANUAL,
            source="admin",
            note=obj.note,
            user=request.user,
        )
        obj.pk, obj.reason, obj.created_at = suppression.pk, suppression.reason, suppression.created_at

    @admin.action(description="Lift: send to the selected addresses again (asks for a reason)", permissions=["lift"])
    def lift_suppressions(self, request: HttpRequest, queryset: QuerySet[Suppression]) -> HttpResponse | None:
        active = queryset.filter(lifted_at__isnull=True)
        form = LiftForm(request.POST if "confirm" in request.POST else None)
        if form.is_valid():
            lifted = sum(
                suppression_lift(suppression_id=pk, user=request.user, reason=form.cleaned_data["reason"])
                for pk in active.values_list("id", flat=True)
            )
            self.message_user(
                request,
                f"Lifted {lifted} suppression(s); each lift is recorded with your name and reason. "
                "Replay what they stopped to send it now.",
                messages.SUCCESS if lifted else messages.WARNING,
            )
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": "Lift suppressions: are you sure?",
            "opts": self.model._meta,
            "suppressions": list(active),
            "already_lifted": queryset.count() - active.count(),
            "form": form,
            "hidden": [("action", "lift_suppressions")]
            + [(helpers.ACTION_CHECKBOX_NAME, str(pk)) for pk in queryset.values_list("id", flat=True)],
        }
        return TemplateResponse(request, "admin/notifications/suppression/lift_confirmation.html", context)
