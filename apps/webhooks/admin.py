"""Portals and their signing secrets (CONTRACT section 7), and the webhook event log.

A secret is shown in full exactly once: on the page right after "rotate secret" generated it (or
to the person typing it). Everywhere else (list, change page, inline, the HTML source) it is
masked, a prefix and the last four characters: enough to tell two apart, not to sign.
"""

from __future__ import annotations

import json
from typing import Any

import structlog
from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db.models import Prefetch, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.decorators import method_decorator
from django.utils.html import format_html, format_html_join
from django.views.decorators.debug import sensitive_post_parameters

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
            field.widget = forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false", "size": 52,
                                                  "placeholder": "whsec_…"})
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


class PortalSecretInline(admin.TabularInline):
    model = PortalSecret
    form = PortalSecretForm
    extra = 0
    fields = ("secret", "active", "created_at")
    readonly_fields = ("created_at",)


@admin.register(Portal)
class PortalAdmin(admin.ModelAdmin):
    list_display = ("slug", "name", "active", "active_secrets", "rate_limit_per_minute", "created_at")
    list_filter = ("active",)
    search_fields = ("slug", "name")
    inlines = [PortalSecretInline]
    actions = ["rotate_secret"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Portal]:
        active = PortalSecret.objects.filter(active=True).order_by("created_at")
        return super().get_queryset(request).prefetch_related(Prefetch("secrets", queryset=active,
                                                                       to_attr="active_secret_list"))

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

    @admin.action(description="Rotate secret: add a new signing secret (old ones stay active)",
                  permissions=["rotate_secret"])
    def rotate_secret(self, request: HttpRequest, queryset: QuerySet[Portal]) -> TemplateResponse:
        rotated = []
        for portal in queryset.order_by("slug"):
            secret = portal_secret_rotate(portal=portal)
            log.info("portal.secret_rotated", portal=portal.slug, secret=mask_secret(secret),
                     user_id=request.user.pk)
            rotated.append((portal, secret, portal.secrets.filter(active=True).count()))
        response = TemplateResponse(request, "admin/webhooks/portal/rotated_secrets.html", {
            **self.admin_site.each_context(request), "title": "New signing secrets", "rotated": rotated,
            "opts": self.model._meta,
        })
        # Shown once: neither the browser nor a proxy keeps a copy.
        response["Cache-Control"] = "no-store"
        return response


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
