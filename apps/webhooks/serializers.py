"""The webhook body schema (CONTRACT section 4), and the normal form of what it accepts.

Parse once: the validated values (trimmed strings, the e-mail and phone in eventplatform.addresses'
normal form, datetimes in UTC) are what the intake stores as the event's payload and what every
later step applies, sends to and erases; the raw body is kept beside it for staff.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Any

from rest_framework import serializers

from eventplatform.addresses import normalise_email, normalise_phone

EVENT_TYPES = ("registration.created", "registration.updated", "registration.cancelled")
ROLES = ("attendee", "speaker")
E164 = r"^\+[1-9]\d{6,14}$"


class OffsetAsGivenDateTimeField(serializers.DateTimeField):
    """A datetime left as written: aware with its own offset, or naive. DRF would read a naive
    value in the server's zone; the event's own timezone is the one that applies, and only the
    enclosing serializer knows it (EventSerializer.validate)."""

    def enforce_timezone(self, value: dt.datetime) -> dt.datetime:
        return value


class PhoneField(serializers.RegexField):
    """E.164 after normalisation: "+49 151 1234-5678\n" is accepted as "+4915112345678"."""

    def to_internal_value(self, data: Any) -> str:
        return normalise_phone(super().to_internal_value(data))


class EventSerializer(serializers.Serializer):
    id = serializers.CharField(max_length=100)
    name = serializers.CharField(max_length=300)
    # Without an offset, the time is read in the event's `timezone` (09:00 in Berlin stays 09:00 in
    # Berlin, docs/webhooks.md "Times"); a time that does not exist there (the hour a DST switch
    # skips) is refused rather than guessed.
    starts_at = OffsetAsGivenDateTimeField()
    timezone = serializers.CharField(max_length=64)
    venue = serializers.CharField(max_length=300, allow_null=True, allow_blank=True, required=False, default=None)

    def validate_timezone(self, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise serializers.ValidationError("Unknown IANA timezone.") from None
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        starts_at = attrs["starts_at"]
        if starts_at.tzinfo is None:
            zone = zoneinfo.ZoneInfo(attrs["timezone"])
            local = starts_at.replace(tzinfo=zone)
            round_trip = local.astimezone(dt.UTC).astimezone(zone).replace(tzinfo=None)
            if round_trip != starts_at:
                raise serializers.ValidationError(
                    {
                        "starts_at": [
                            f"{starts_at.isoformat()} does not exist in {attrs['timezone']} (a daylight-saving gap); "
                            "give the UTC offset."
                        ]
                    }
                )
            starts_at = local
        attrs["starts_at"] = starts_at.astimezone(dt.UTC)
        return attrs


class AttendeeSerializer(serializers.Serializer):
    email = serializers.EmailField(max_length=254)
    phone = PhoneField(
        E164,
        allow_null=True,
        allow_blank=True,
        required=False,
        default=None,
        error_messages={"invalid": "Phone must be E.164, e.g. +4915112345678."},
    )
    first_name = serializers.CharField(max_length=150)
    last_name = serializers.CharField(max_length=150, allow_blank=True)
    role = serializers.ChoiceField(choices=ROLES)
    locale = serializers.CharField(max_length=16, required=False, default="en")

    def validate_email(self, value: str) -> str:
        return normalise_email(value)


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


def normalised_payload(payload: dict[str, Any], validated: dict[str, Any]) -> dict[str, Any]:
    """The payload with every field the schema knows replaced by its validated, normalised value
    (JSON types: datetimes as UTC ISO 8601); fields the schema does not know are kept as sent."""

    def plain(value: Any) -> Any:
        return value.astimezone(dt.UTC).isoformat() if isinstance(value, dt.datetime) else value

    result = dict(payload)
    result["type"], result["timestamp"] = validated["type"], plain(validated["timestamp"])
    data = result["data"] = dict(payload["data"])
    data["registration_id"] = validated["data"]["registration_id"]
    for part in ("event", "attendee"):
        if part in validated["data"]:
            data[part] = {
                **payload["data"][part],
                **{name: plain(value) for name, value in validated["data"][part].items()},
            }
    return result
