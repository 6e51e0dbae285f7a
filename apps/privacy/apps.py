from django.apps import AppConfig


class PrivacyConfig(AppConfig):
    """Data that ages out (retention) and erasure requests; it reads and redacts the other apps'
    tables, none of them imports it."""

    name = "apps.privacy"
    default_auto_field = "django.db.models.BigAutoField"
