"""replay_notifications: by id or by filters; sent ones only when named; prints what it queued."""

from __future__ import annotations

import datetime as dt
import getpass
import io
import uuid
from collections.abc import Callable

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from apps.notifications.models import Notification
from apps.outbox.models import OutboxMessage

pytestmark = pytest.mark.django_db

Make = Callable[..., Notification]


def replay(*args: str, reason: str = "test replay") -> str:
    """Every replay needs --reason (it goes into the audit); a dry run does not."""
    out = io.StringIO()
    call_command("replay_notifications", *args, *(["--reason", reason] if reason else []), stdout=out)
    return out.getvalue()


def set_state(notification: Notification, status: str, error_code: str = "", hours_ago: float = 0) -> Notification:
    Notification.objects.filter(id=notification.id).update(
        status=status, last_error_code=error_code, updated_at=timezone.now() - dt.timedelta(hours=hours_ago)
    )
    notification.refresh_from_db()
    return notification


def queued(notification: Notification) -> int:
    """Send messages queued for it besides the one its creation queued."""
    return OutboxMessage.objects.filter(kwargs__notification_id=str(notification.id)).count() - 1


def test_replay_by_id_requeues_a_dead_notification(make_notification: Make) -> None:
    dead = set_state(make_notification(), "dead", "smtp_permanent")
    out = replay("--id", str(dead.id))
    dead.refresh_from_db()
    assert f"queued {dead.id} confirmation/email dead smtp_permanent" in out
    assert out.strip().endswith("queued 1 notification(s)")
    assert (dead.status, queued(dead)) == ("pending", 1) and dead.replayed_at is not None


def test_filters_select_dead_notifications(make_notification: Make) -> None:
    old_smtp = set_state(make_notification(), "dead", "smtp_permanent", hours_ago=5)
    new_smtp = set_state(make_notification(), "dead", "smtp_permanent", hours_ago=1)
    new_sms = set_state(make_notification(channel="sms"), "dead", "sms_permanent", hours_ago=1)
    reminder = set_state(make_notification(kind="reminder_24h"), "dead", "smtp_transient", hours_ago=1)
    sent = set_state(make_notification(kind="update"), "sent", hours_ago=1)

    since = (timezone.now() - dt.timedelta(hours=2)).isoformat()
    out = replay("--since", since, "--channel", "email", "--error-code", "smtp_permanent")

    assert str(new_smtp.id) in out and "queued 1 notification(s)" in out
    assert [queued(n) for n in (old_smtp, new_smtp, new_sms, reminder, sent)] == [0, 1, 0, 0, 0]
    assert "queued 1 notification(s)" in replay("--kind", "reminder_24h")
    assert queued(reminder) == 1 and queued(sent) == 0


def test_sent_notifications_are_replayed_only_when_named_with_include_sent(make_notification: Make) -> None:
    sent = set_state(make_notification(), "sent")
    out = replay("--id", str(sent.id))
    assert f"skipped {sent.id}: status sent" in out and queued(sent) == 0
    with pytest.raises(CommandError):
        replay("--kind", "confirmation", "--include-sent")
    assert f"queued {sent.id}" in replay("--id", str(sent.id), "--include-sent")
    assert queued(sent) == 1


def test_dry_run_changes_nothing(make_notification: Make) -> None:
    dead = set_state(make_notification(), "dead", "smtp_permanent")
    out = replay("--id", str(dead.id), "--dry-run", reason="")
    dead.refresh_from_db()
    assert "would queue 1 notification(s)" in out and (dead.status, queued(dead)) == ("dead", 0)


def test_needs_ids_or_filters_and_says_what_it_skipped() -> None:
    with pytest.raises(CommandError):
        replay()
    with pytest.raises(CommandError):
        replay("--id", "not-a-uuid")
    missing = uuid.uuid4()
    assert f"skipped {missing}: no such notification" in replay("--id", str(missing))


def test_replaying_twice_queues_once(make_notification: Make) -> None:
    dead = set_state(make_notification(), "dead", "smtp_permanent")
    replay("--id", str(dead.id))
    assert f"skipped {dead.id}: status pending" in replay("--id", str(dead.id))
    assert queued(dead) == 1


def test_reason_is_required_and_the_command_is_recorded_as_actor(make_notification: Make) -> None:
    dead = set_state(make_notification(), "dead", "smtp_permanent")
    with pytest.raises(CommandError, match="--reason is required"):
        replay("--id", str(dead.id), reason="")
    with pytest.raises(CommandError, match="--reason is required"):
        replay("--id", str(dead.id), reason="   ")
    dead.refresh_from_db()
    assert (dead.status, queued(dead), dead.replays.count()) == ("dead", 0, 0)

    replay("--id", str(dead.id), reason="mail server fixed, ticket 4711")
    audit = dead.replays.get()
    assert audit.actor_type == "command" and audit.user is None
    assert audit.actor == f"replay_notifications (os user {getpass.getuser()})"
    assert (audit.reason, audit.previous_status, audit.previous_error_code) == (
        "mail server fixed, ticket 4711",
        "dead",
        "smtp_permanent",
    )


def test_a_skipped_notification_gets_no_audit_row(make_notification: Make) -> None:
    dead = set_state(make_notification(), "dead", "smtp_permanent")
    replay("--id", str(dead.id))
    replay("--id", str(dead.id))
    assert dead.replays.count() == 1
