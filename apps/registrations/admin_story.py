"""The attendee's story in the admin: one search, one page per registration (issue 9, part 4).

A mixin for RegistrationAdmin, kept in its own module so that the registration admin itself only
gains one base class: the search also matches notification, event and delivery ids; the list and
the change page link to `/admin/registrations/registration/<pk>/story/`.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from apps.notifications.admin import REPLAY_PERMISSION
from apps.notifications.services import REPLAYABLE, REPLAYABLE_IF_SENT
from apps.registrations.models import Registration
from apps.registrations.selectors import registration_ids_matching, registration_story


class AttendeeStoryMixin(admin.ModelAdmin):
    def get_urls(self) -> list[Any]:
        return [
            path(
                "<path:object_id>/story/",
                self.admin_site.admin_view(self.story_view),
                name="registrations_registration_story",
            ),
            *super().get_urls(),
        ]

    def get_list_display(self, request: HttpRequest) -> Any:
        return [*super().get_list_display(request), "story_link"]

    def get_search_fields(self, request: HttpRequest) -> Any:
        """Attendees give their full name: the first name is searched too (with the last name)."""
        fields = list(super().get_search_fields(request))
        return fields if any(field.endswith("first_name") for field in fields) else [*fields, "first_name"]

    @admin.display(description="story")
    def story_link(self, registration: Registration) -> str:
        return format_html(
            '<a href="{}">story</a>', reverse("admin:registrations_registration_story", args=[registration.pk])
        )

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Registration], search_term: str
    ) -> tuple[QuerySet[Registration], bool]:
        """The usual search fields, plus an exact notification id, webhook event id or delivery id."""
        results, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        named = registration_ids_matching(search_term)
        if named:
            results = results | queryset.filter(pk__in=named)
        return results, may_have_duplicates

    def story_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        registration = get_object_or_404(Registration.objects.select_related("portal"), pk=object_id)
        story = registration_story(registration=registration)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Story of registration {registration.external_id}",
            "opts": self.model._meta,
            "registration": registration,
            "story": story,
            "event_timezone": story.timezone,
            "can_replay": request.user.has_perm(REPLAY_PERMISSION),
            "replayable_statuses": [*REPLAYABLE, *REPLAYABLE_IF_SENT],
        }
        return TemplateResponse(request, "admin/registrations/registration/story.html", context)
