"""The SMS channel's URL: the status callbacks every Twilio send asks for (callbacks.py), included by
the root urlconf (apps/support/urls.py) at its root, so that the path is `/sms/status/<id>/`."""

from __future__ import annotations

from django.urls import path

from apps.notifications.channels.sms.callbacks import sms_status_callback

urlpatterns = [
    path("sms/status/<uuid:notification_id>/", sms_status_callback, name="sms-status-callback"),
]
