from django.contrib import admin
from django.urls import path

from apps.webhooks.views import webhook_receive
from eventplatform.health import healthz, metrics_view, readyz
from eventplatform.status.views import status_view

# The admin index links to /admin/status/ (templates/admin/index_with_status.html).
admin.site.index_template = "admin/index_with_status.html"

urlpatterns = [
    path("webhooks/<slug:portal_slug>/", webhook_receive, name="webhook-receive"),
    path("healthz", healthz),
    path("readyz", readyz),
    path("metrics", metrics_view),
    # Before admin/: admin_view lets staff in and sends anyone else to the admin login page.
    path("admin/status/", admin.site.admin_view(status_view), name="admin-status"),
    path("admin/", admin.site.urls),
]
