"""`/admin/error-codes/`: the error catalogue for support staff, one anchor per code, so every error
code shown in the admin (the attendee's story, lists) links to its "what to do" line."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from eventplatform.errors import CATALOGUE


def error_codes_view(request: HttpRequest) -> HttpResponse:
    context = {
        **admin.site.each_context(request),
        "title": "Error codes: what they mean, what to do",
        "codes": sorted(CATALOGUE.values(), key=lambda code: code.code),
    }
    return TemplateResponse(request, "admin/error_codes.html", context)
