from __future__ import annotations

from django.contrib import admin

from apps.privacy.models import ErasureRecord
from eventplatform.admin import ReadOnlyAdmin


@admin.register(ErasureRecord)
class ErasureRecordAdmin(ReadOnlyAdmin):
    list_display = ("erased_at", "requested_by", "email_sha256")
    search_fields = ("email_sha256", "requested_by")
