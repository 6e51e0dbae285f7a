from django.apps import AppConfig


class RegistrationsConfig(AppConfig):
    name = "apps.registrations"
    default_auto_field = "django.db.models.BigAutoField"
