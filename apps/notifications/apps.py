from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "apps.notifications"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from anymail.signals import tracking

        from apps.notifications import checks  # noqa: F401 - registers the claim timeout check
        from apps.notifications.channels.email.tracking import esp_tracking_received

        # ESP tracking webhooks (anymail's views) report through this receiver; dispatch_uid: once.
        tracking.connect(esp_tracking_received, dispatch_uid="notifications.esp_tracking")
