"""The webhook body schema (CONTRACT section 4)."""

from __future__ import annotations

import zoneinfo
from typing import Any

from rest_framework import serializers

EVENT_TYPES = ("registration.created", "registration.updated", "registration.cancelled")
ROLES = ("attendee", "speaker")
E164 = r"^\+[1-9]\d{6,14}$"


class EventSerializer(serializers.Serializer):
    id = serializers.CharField(max_length=100)
    name = serializers.CharField(max_length=300)
    starts_at = serializers.DateTimeField()
    timezone = serializers.CharField(max_length=64)
    venue = serializers.CharField(max_length=300, allow_null=True, allow_blank=True, required=False, default=None)

    def validate_timezone(self, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise serializers.ValidationError("Unknown IANA timezone.") from None
        return value


class AttendeeSerializer(serializers.Serializer):
    email = serializers.EmailField(max_length=254)
    phone = serializers.RegexField(E164, allow_null=True, allow_blank=True, required=False, default=None,
                                   error_messages={"invalid": "Phone must be E.164, e.g. +4915112345678."})
    first_name = serializers.CharField(max_length=150)
    last_name = serializers.CharField(max_length=150, allow_blank=True)
    role = serializers.ChoiceField(choices=ROLES)
    locale = serializers.CharField(max_length=16, required=False, default="en")


class RegistrationDataSerializer(serializers.Serializer):
    registration_id = serializers.CharField(max_length=100)
    event = EventSerializer(required=False)
    attendee = AttendeeSerializer(required=False)


class WebhookPayloadSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=EVENT_TYPES)
    timestamp = serializers.DateTimeField()
    data = RegistrationDataSerializer()

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # A cancellation may carry the registration id alone; everything else needs the full picture.
        if attrs["type"] != "registration.cancelled":
            missing = {k: ["This field is required."] for k in ("event", "attendee") if k not in attrs["data"]}
            if missing:
                raise serializers.ValidationError({"data": missing})
        return attrs
