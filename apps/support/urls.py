from django.contrib import admin
from django.urls import include, path, re_path

from apps.support.status.views import status_view
from apps.webhooks.views import api_schema, webhook_not_found, webhook_receive
from eventplatform.admin_error_codes import error_codes_view
from eventplatform.health import healthz, metrics_view, readyz

# The admin index links to /admin/status/ (templates/admin/index_with_status.html).
admin.site.index_template = "admin/index_with_status.html"

urlpatterns = [
    # Any slug reaches the view (which answers unknown_portal for what cannot be one); any other
    # path under webhooks/ gets the contract's error body rather than an HTML 404 or a redirect.
    re_path(r"^webhooks/(?P<portal_slug>[^/]+)/$", webhook_receive, name="webhook-receive"),
    re_path(r"^webhooks/(?P<rest>.*)$", webhook_not_found),
    path("api/schema/", api_schema, name="api-schema"),
    # Providers' reports after `sent` (docs/delivery-status.md): anymail's ESP webhooks
    # (/anymail/<esp>/tracking/) and the SMS status callbacks every Twilio send asks for.
    path("anymail/", include("anymail.urls")),
    path("", include("apps.notifications.channels.sms.urls")),
    path("healthz", healthz),
    path("readyz", readyz),
    path("metrics", metrics_view),
    path("admin/error-codes/", admin.site.admin_view(error_codes_view), name="admin-error-codes"),
    # Before admin/: admin_view lets staff in and sends anyone else to the admin login page.
    path("admin/status/", admin.site.admin_view(status_view), name="admin-status"),
    path("admin/", admin.site.urls),
]
