from django.apps import AppConfig


class SupportConfig(AppConfig):
    """The top layer: what composes the other apps (the URL root, the status page, the scheduler's
    jobs and `run_pipeline`). It may import any app; none imports it (docs/architecture.md)."""

    name = "apps.support"
    default_auto_field = "django.db.models.BigAutoField"
