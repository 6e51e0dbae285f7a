"""Portals and their signing secrets (CONTRACT section 7), and the webhook event log.

A secret is shown in full exactly once: on the page right after "rotate secret" / "new secret" or
"Add portal" generated it (or to the person typing it). Everywhere else (list, change page, inline,
the HTML source) it is masked, a prefix and the last four characters: enough to tell two apart, not to sign.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import structlog
from django import forms
from django.contrib import admin, messages
from django.contrib.admin.actions import delete_selected
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import models
from django.db.models import Exists, OuterRef, Prefetch, Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.utils.html import format_html, format_html_join
from django.views.decorators.debug import sensitive_post_parameters

from apps.webhooks import senders
from apps.webhooks.models import Portal, PortalSecret, WebhookEvent
from apps.webhooks.serializers import EVENT_TYPES
from apps.webhooks.services import portal_secret_rotate
from apps.webhooks.signature import mask_secret, validate_secret
from eventplatform.admin import LargeTableAdmin, ReadOnlyAdmin, fixed_values_filter

log = structlog.get_logger("webhooks.admin")


class MaskedSecretWidget(forms.Widget):
    """Renders a stored secret masked; no input, no hidden field: the full value never reaches the page."""

    def render(self, name: str, value: Any, attrs: dict[str, Any] | None = None, renderer: Any = None) -> str:
        return format_html("<code>{}</code>", mask_secret(value or ""))


class PortalSecretForm(forms.ModelForm):
    """A stored secret is read-only and masked; a new one typed by hand is checked by the same
    `validate_secret` as `create_portal --secret` (whsec_, base64, at least 16 key bytes)."""

    class Meta:
        model = PortalSecret
        fields = ("secret", "active")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["secret"]
        if self.instance.pk:
            field.disabled = True
            field.widget = MaskedSecretWidget()
        else:
            field.widget = forms.TextInput(
                attrs={"autocomplete": "off", "spellcheck": "false", "size": 52, "placeholder": "whsec_…"}
            )
            field.help_text = "whsec_ and base64 of at least 16 bytes; or use the portal list's “rotate secret”."

    def clean_secret(self) -> str:
        if self.fields["secret"].disabled:
            return self.instance.secret
        secret = self.cleaned_data["secret"]
        try:
            validate_secret(secret)
        except ValueError as error:
            raise ValidationError(str(error)) from None
        return secret


class PortalForm(forms.ModelForm):
    """The sender fields stored in their one normal form (senders.parse_*): what is shown after
    saving is what the e-mails carry. A From on a domain not in EMAIL_SENDER_DOMAINS is refused
    here, with the domains that are allowed."""

    class Meta:
        model = Portal
        fields = "__all__"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "default_locale" in self.fields:  # left empty: English, the shipped default
            self.fields["default_locale"].required = False

    def _parsed(self, name: str, parse: Callable[[str], str]) -> str:
        value = self.cleaned_data[name]
        if not value:
            return ""
        try:
            return parse(value)
        except ValueError as error:
            raise ValidationError(str(error)) from None

    def clean_email_from(self) -> str:
        return self._parsed("email_from", senders.parse_email_from)

    def clean_reply_to(self) -> str:
        return self._parsed("reply_to", senders.parse_reply_to)

    def clean_sms_sender_id(self) -> str:
        return self._parsed("sms_sender_id", senders.parse_sms_sender_id)

    def clean_default_locale(self) -> str:
        return self._parsed("default_locale", senders.parse_locale) or "en"


class PortalSecretInline(admin.TabularInline):
    model = PortalSecret
    form = PortalSecretForm
    extra = 0
    fields = ("secret", "active", "created_at")
    readonly_fields = ("created_at",)


@admin.register(Portal)
class PortalAdmin(admin.ModelAdmin):
    form = PortalForm
    list_display = ("slug", "name", "active", "active_secrets", "email_from", "rate_limit_per_minute", "created_at")
    fieldsets = (
        (None, {"fields": ("slug", "name", "active", "rate_limit_per_minute")}),
        (
            "Sender and language (what attendees see)",
            {"fields": ("email_from", "reply_to", "sms_sender_id", "default_locale")},
        ),
    )
    list_filter = ("active",)
    search_fields = ("slug", "name")
    inlines = [PortalSecretInline]
    actions = ["rotate_secret"]
    change_form_template = "admin/webhooks/portal/change_form.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Portal]:
        active = PortalSecret.objects.filter(active=True).order_by("created_at")
        return (
            super()
            .get_queryset(request)
            .prefetch_related(Prefetch("secrets", queryset=active, to_attr="active_secret_list"))
        )

    @admin.display(description="active secrets")
    def active_secrets(self, obj: Portal) -> str:
        secrets = getattr(obj, "active_secret_list", None)
        if secrets is None:
            secrets = list(obj.secrets.filter(active=True).order_by("created_at"))
        return format_html_join(" ", "<code>{}</code>", ((mask_secret(s.secret),) for s in secrets)) or "—"

    @method_decorator(sensitive_post_parameters())
    def changeform_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        """Error reports (Sentry, Django's 500 mails) of this page never carry a typed secret."""
        return super().changeform_view(request, *args, **kwargs)

    def has_rotate_secret_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("webhooks.rotate_portal_secret")

    @admin.action(
        description="Rotate secret (New secret for a portal without one): add a new signing secret; "
        "old ones stay active",
        permissions=["rotate_secret"],
    )
    def rotate_secret(self, request: HttpRequest, queryset: QuerySet[Portal]) -> TemplateResponse:
        return self._new_secrets_page(request, list(queryset.order_by("slug")))

    def _new_secrets_page(self, request: HttpRequest, portals: list[Portal]) -> TemplateResponse:
        """Generate a secret for each portal and show it, this once."""
        rotated = []
        for portal in portals:
            secret = portal_secret_rotate(portal=portal)
            log.info("portal.secret_rotated", portal=portal.slug, secret=mask_secret(secret), user_id=request.user.pk)
            rotated.append((portal, secret, portal.secrets.filter(active=True).count()))
        response = TemplateResponse(
            request,
            "admin/webhooks/portal/rotated_secrets.html",
            {
                **self.admin_site.each_context(request),
                "title": "New signing secrets",
                "rotated": rotated,
                "opts": self.model._meta,
            },
        )
        # Shown once: neither the browser nor a proxy keeps a copy.
        response["Cache-Control"] = "no-store"
        return response

    # --- one portal's page: "Rotate secret", or "New secret" when it has no active one
    def get_urls(self) -> list[Any]:
        return [
            path(
                "<path:object_id>/new-secret/",
                self.admin_site.admin_view(self.new_secret_view),
                name="webhooks_portal_new_secret",
            ),
            *super().get_urls(),
        ]

    def new_secret_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """POST only (a GET, a prefetch or a crawler, must not create secrets)."""
        portal = self.get_object(request, object_id)
        if portal is None or request.method != "POST" or not self.has_rotate_secret_permission(request):
            raise PermissionDenied
        return self._new_secrets_page(request, [portal])

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        portal = self.get_object(request, object_id)
        extra = {**(extra_context or {})}
        if portal is not None and self.has_rotate_secret_permission(request):
            extra["secret_button"] = {
                "url": reverse("admin:webhooks_portal_new_secret", args=[portal.pk]),
                "label": "Rotate secret" if portal.secrets.filter(active=True).exists() else "New secret",
            }
        return super().change_view(request, object_id, form_url, extra)

    # --- "Add portal": a portal saved without a typed secret gets its first one, shown once
    def response_add(self, request: HttpRequest, obj: Portal, post_url_continue: str | None = None) -> HttpResponse:
        """Runs inside the add view's transaction, after the inline secrets were saved: a portal
        without an active secret would answer every webhook 401, so it gets one now, and the page
        that shows it is the add's answer (the only time it is shown in full)."""
        if obj.secrets.filter(active=True).exists():
            return super().response_add(request, obj, post_url_continue)
        return self._new_secrets_page(request, [obj])

    # --- deleting: a portal with data is kept; say so, and what to do instead
    def _portals_with_data(self, queryset: QuerySet[Portal]) -> list[str]:
        """Slugs of the portals that rows protect from deletion (webhook events, registrations): found
        from the relations themselves, so this app names no app above it."""
        has_data = Q()
        for relation in Portal._meta.related_objects:
            if relation.on_delete is models.PROTECT:
                has_data |= Exists(relation.related_model._base_manager.filter(**{relation.field.name: OuterRef("pk")}))
        return list(queryset.filter(has_data).order_by("slug").values_list("slug", flat=True))

    def _data_kept_message(self, request: HttpRequest, slugs: list[str]) -> None:
        messages.warning(
            request,
            (
                f"Not deleted: {', '.join(slugs)} {'has' if len(slugs) == 1 else 'have'} received webhooks or "
                "registrations, and that data is kept (the event log and what was sent). To stop a portal, untick "
                "“Active” on its page and save: its webhooks are then answered 404 unknown_portal."
            ),
        )

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        slugs = self._portals_with_data(Portal.objects.filter(pk=object_id)) if object_id.isdigit() else []
        if slugs and self.has_view_or_change_permission(request):
            self._data_kept_message(request, slugs)
            return HttpResponseRedirect(reverse("admin:webhooks_portal_change", args=[object_id]))
        return super().delete_view(request, object_id, extra_context)

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        if "delete_selected" in actions:
            actions["delete_selected"] = (self.delete_portals, "delete_selected", actions["delete_selected"][2])
        return actions

    def delete_portals(
        self, modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Portal]
    ) -> HttpResponse | None:
        """Django's bulk delete, unless a selected portal has data: then nothing is deleted and the
        message says why (instead of a page of protected objects or "no permission")."""
        slugs = self._portals_with_data(queryset)
        if slugs:
            self._data_kept_message(request, slugs)
            return None
        return delete_selected(modeladmin, request, queryset)


@admin.register(WebhookEvent)
class WebhookEventAdmin(LargeTableAdmin, ReadOnlyAdmin):
    list_display = ("received_at", "portal", "type", "status", "delivery_id", "id")
    list_filter = ("status", ("type", fixed_values_filter(lambda: EVENT_TYPES)), "portal", "received_at")
    search_fields = ("=id", "=delivery_id")
    list_select_related = ("portal",)
    readonly_fields = (
        "id",
        "portal",
        "delivery_id",
        "type",
        "status",
        "received_at",
        "pretty_payload",
        "raw_body_as_received",
        "errors",
    )
    exclude = ("raw_body", "payload")

    def get_queryset(self, request: HttpRequest) -> QuerySet[WebhookEvent]:
        # The raw body and payload can be large; the list never shows them.
        return super().get_queryset(request).select_related("portal").defer("raw_body", "payload")

    @admin.display(description="payload")
    def pretty_payload(self, obj: WebhookEvent) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.payload, indent=2, ensure_ascii=False))

    @admin.display(description="body as received")
    def raw_body_as_received(self, obj: WebhookEvent) -> str:
        """The bytes the portal sent, beside the normalised payload that was stored and applied
        (parse once: the payload is what counts; this is how the portal wrote it). Escaped, and
        undecodable bytes shown as replacement characters."""
        body = bytes(obj.raw_body or b"")
        if not body:
            return "—"
        return format_html('<pre style="white-space: pre-wrap">{}</pre>', body.decode("utf-8", errors="replace"))
