"""The admin of wording (CONTRACT section 9): one page per template to edit, preview, test-send,
compare and revert versions, and a page to add a locale's templates from the shipped files.

Permissions: seeing needs `notifications.view_messagetemplate` (or change); saving, reverting and
test sends need `notifications.change_messagetemplate`; adding a template or a locale needs
`notifications.add_messagetemplate`. Nobody deletes (the versions explain sent messages).
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Max, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from apps.notifications import message_templates
from apps.notifications.message_templates import Preview, TemplateSaveRefused, TestSendRefused
from apps.notifications.models import MessageTemplate, MessageTemplateVersion

_FIELDS = ("subject", "text", "html")
REGISTRATION_VIEW_PERMISSION = "registrations.view_registration"


class MessageTemplateAddForm(forms.ModelForm):
    class Meta:
        model = MessageTemplate
        fields = ("kind", "channel", "locale", "role", "portal")

    def clean_locale(self) -> str:
        locale = message_templates.normalise_locale(self.cleaned_data["locale"])
        if not message_templates.rendering._LOCALE.fullmatch(locale):
            raise ValidationError("A locale code such as en, fr or fr-ca.")
        return locale

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if {"kind", "channel", "locale", "role"} <= set(data) and not message_templates.shipped_default(
            kind=data["kind"], channel=data["channel"], role=data["role"], locale=data["locale"]
        ):
            raise ValidationError("This message is not sent on this channel (there is no shipped wording for it).")
        return data


class VersionForm(forms.Form):
    subject = forms.CharField(required=False, max_length=500, widget=forms.TextInput(attrs={"size": 100}))
    text = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 8, "cols": 100}))
    html = forms.CharField(required=False, label="HTML", widget=forms.Textarea(attrs={"rows": 8, "cols": 100}))
    registration = forms.IntegerField(
        required=False,
        min_value=1,
        label="Preview with registration (id)",
        help_text="Empty: a sample registration.",
    )


class AddLocaleForm(forms.ModelForm):
    """The locale and the portal (empty: all portals) of the templates to create."""

    class Meta:
        model = MessageTemplate
        fields = ("locale", "portal")
        help_texts = {"locale": "e.g. fr or fr-ca; starts from the shipped wording of its chain."}

    def validate_unique(self) -> None:
        """Existing templates of the locale are skipped, not an error."""

    def clean_locale(self) -> str:
        locale = message_templates.normalise_locale(self.cleaned_data["locale"])
        if not message_templates.rendering._LOCALE.fullmatch(locale):
            raise ValidationError("A locale code such as en, fr or fr-ca.")
        return locale


@admin.register(MessageTemplate)
class MessageTemplateAdmin(admin.ModelAdmin):
    list_display = ("kind", "channel", "locale", "role", "portal_name", "active_version")
    list_filter = ("kind", "channel", "locale", "role")
    form = MessageTemplateAddForm
    change_list_template = "admin/notifications/messagetemplate/change_list.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet[MessageTemplate]:
        return super().get_queryset(request).select_related("portal").annotate(latest=Max("versions__number"))

    @admin.display(description="portal")
    def portal_name(self, obj: MessageTemplate) -> str:
        return obj.portal.slug if obj.portal else "all portals"

    @admin.display(description="active version", ordering="latest")
    def active_version(self, obj: MessageTemplate) -> str:
        latest = getattr(obj, "latest", None)  # annotated by get_queryset
        return f"version {latest}" if latest else "-"

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def get_urls(self) -> list[Any]:
        return [
            path(
                "add-locale/",
                self.admin_site.admin_view(self.add_locale_view),
                name="notifications_messagetemplate_add_locale",
            ),
            *super().get_urls(),
        ]

    def save_model(self, request: HttpRequest, obj: MessageTemplate, form: forms.Form, change: bool) -> None:
        """A new template starts as a copy of the shipped wording of its locale chain (version 1)."""
        super().save_model(request, obj, form, change)
        fields = message_templates.shipped_default(kind=obj.kind, channel=obj.channel, role=obj.role, locale=obj.locale)
        assert fields is not None  # the form refused it otherwise
        message_templates.message_template_save(
            template=obj,
            subject=fields.get("subject", ""),
            text=fields["text"],
            html=fields.get("html", ""),
            user=request.user,
            note="shipped default",
        )

    def response_add(
        self, request: HttpRequest, obj: MessageTemplate, post_url_continue: str | None = None
    ) -> HttpResponse:
        return HttpResponseRedirect(reverse("admin:notifications_messagetemplate_change", args=[obj.pk]))

    def add_locale_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = AddLocaleForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            portal = form.cleaned_data["portal"]
            created = message_templates.message_template_add_locale(
                locale=form.cleaned_data["locale"], portal_id=portal.pk if portal else None, user=request.user
            )
            messages.success(
                request,
                f"{len(created)} templates created for '{form.cleaned_data['locale']}' "
                "(templates that existed already were left as they are).",
            )
            url = reverse("admin:notifications_messagetemplate_changelist")
            return HttpResponseRedirect(f"{url}?locale__exact={form.cleaned_data['locale']}")
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Add a locale's templates",
            "form": form,
        }
        return TemplateResponse(request, "admin/notifications/messagetemplate/add_locale.html", context)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """The edit page (not Django's change form: a save is a new version, not an update of the row)."""
        template = self.get_object(request, object_id)
        if template is None:
            raise Http404("no such template")
        if not self.has_view_or_change_permission(request, template):
            raise PermissionDenied
        can_change = self.has_change_permission(request, template)
        versions = list(MessageTemplateVersion.objects.filter(template=template).order_by("-number"))
        active = versions[0] if versions else None
        preview: Preview | None = None
        if request.method == "POST":
            if not can_change:
                raise PermissionDenied
            action = request.POST.get("action", "")
            if action == "revert":
                return self._revert(request, template, request.POST.get("number", ""))
            form = VersionForm(request.POST)
            if form.is_valid():
                preview = self._preview(request, template, form)
                if preview is not None and action == "save":
                    version = message_templates.message_template_save(
                        template=template, user=request.user, **{f: form.cleaned_data[f] for f in _FIELDS}
                    )
                    messages.success(request, f"Version {version.number} saved; it is used from now on.")
                    return HttpResponseRedirect(request.path)
                if preview is not None and action == "test":
                    try:
                        address = message_templates.message_template_send_test(
                            template=template, preview=preview, user=request.user
                        )
                    except TestSendRefused as refused:
                        messages.error(request, refused.message)
                    else:
                        messages.success(request, f"Test message sent to {address}.")
        else:
            # The active version, bound so that the preview's refusals show on its fields.
            data = {f: getattr(active, f) for f in _FIELDS} if active else {}
            form = VersionForm({**data, "registration": request.GET.get("registration", "")})
            if form.is_valid():
                preview = self._preview(request, template, form)
        history = [
            (version, message_templates.version_diff(versions[i + 1] if i + 1 < len(versions) else None, version))
            for i, version in enumerate(versions)
        ]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Wording: {template}",
            "original": template,
            "form": form,
            "preview": preview,
            "is_sms": message_templates.is_text_only(template.channel),
            "active": active,
            "history": history,
            "can_change": can_change,
        }
        return TemplateResponse(request, "admin/notifications/messagetemplate/edit.html", context)

    def _revert(self, request: HttpRequest, template: MessageTemplate, number: str) -> HttpResponse:
        if not number.isdigit() or not template.versions.filter(number=int(number)).exists():
            raise Http404("no such version")
        try:
            version = message_templates.message_template_revert(
                template=template, number=int(number), user=request.user
            )
        except TemplateSaveRefused as refused:  # an old version that the checks of today refuse
            messages.error(request, f"Version {number} cannot be restored: {refused.message}")
        else:
            messages.success(request, f"Version {version.number} saved: a copy of version {number}.")
        return HttpResponseRedirect(request.path)

    def _preview(self, request: HttpRequest, template: MessageTemplate, form: VersionForm) -> Preview | None:
        """The preview of the form's parts, or None with the reasons added to the form. A real
        registration's data (names, addresses) is shown only to who may see registrations anyway."""
        if form.cleaned_data.get("registration") and not request.user.has_perm(REGISTRATION_VIEW_PERMISSION):
            form.add_error(
                "registration", "Previewing with a real registration needs the permission to view registrations."
            )
            return None
        try:
            context = message_templates.sample_context(
                template=template, registration_id=form.cleaned_data.get("registration")
            )
        except LookupError as missing:
            form.add_error("registration", str(missing))
            return None
        try:
            return message_templates.message_template_preview(
                template=template, context=context, **{f: form.cleaned_data.get(f) or "" for f in _FIELDS}
            )
        except TemplateSaveRefused as refused:
            for field, message in refused.errors.items():
                form.add_error(field, message)
            return None
