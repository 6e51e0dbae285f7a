from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest
from django.template.response import TemplateResponse

from apps.support.status.chart import sent_failed_chart_svg
from apps.support.status.selectors import pipeline_status


def status_view(request: HttpRequest) -> TemplateResponse:
    """Staff only: wired through `admin.site.admin_view`, which sends anyone else to the login page."""
    status = pipeline_status()
    context = {
        **admin.site.each_context(request),
        "title": "Pipeline status",
        "status": status,
        "chart": sent_failed_chart_svg(status.chart),
    }
    return TemplateResponse(request, "admin/status.html", context)
