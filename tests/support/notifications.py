"""Counting what reached the outside world and the outbox, per notification (fault tests)."""

from __future__ import annotations

import collections
from collections.abc import Iterable

from apps.notifications import actor_names
from apps.notifications.models import Notification
from apps.outbox.models import OutboxMessage
from tests.support.smtp import SmtpServer


def emails_by_notification(smtp: SmtpServer) -> collections.Counter[str]:
    """E-mails the SMTP server accepted, per X-Eventplatform-Notification-Id (2 = a duplicate)."""
    return collections.Counter(m["X-Eventplatform-Notification-Id"] for m in smtp.messages)


def send_rows_per_notification(notifications: Iterable[Notification]) -> dict[str, int]:
    """Outbox rows for `notification_send` whose kwargs name each notification (0 included)."""
    ids = {str(n.id) for n in notifications}
    rows = OutboxMessage.objects.filter(actor_name=actor_names.SEND_ACTOR).values_list("kwargs", flat=True)
    counts = collections.Counter(kwargs["notification_id"] for kwargs in rows if kwargs["notification_id"] in ids)
    return {notification_id: counts[notification_id] for notification_id in ids}
