from django.contrib import admin
from django.urls import path

from apps.webhooks.views import webhook_receive
from eventplatform.admin_error_codes import error_codes_view
from eventplatform.health import healthz, metrics_view, readyz

urlpatterns = [
    path("webhooks/<slug:portal_slug>/", webhook_receive, name="webhook-receive"),
    path("healthz", healthz),
    path("readyz", readyz),
    path("metrics", metrics_view),
    path("admin/error-codes/", admin.site.admin_view(error_codes_view), name="admin-error-codes"),
    path("admin/", admin.site.urls),
]
