from django.contrib import admin
from django.urls import path

from apps.webhooks.views import webhook_receive
from eventplatform.health import healthz, metrics_view, readyz

urlpatterns = [
    path("webhooks/<slug:portal_slug>/", webhook_receive, name="webhook-receive"),
    path("healthz", healthz),
    path("readyz", readyz),
    path("metrics", metrics_view),
    path("admin/", admin.site.urls),
]
