"""notification_replay: the replay and its audit row commit together; two staff at once replay once."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from django.db import connection

from apps.notifications.models import Notification, NotificationReplay
from apps.notifications.services import notification_replay
from apps.outbox.models import OutboxMessage

Make = Callable[..., Notification]


def dead(make_notification: Make) -> Notification:
    notification = make_notification()
    Notification.objects.filter(id=notification.id).update(status="dead", last_error_code="smtp_permanent")
    return notification


@pytest.mark.django_db
def test_a_replay_needs_a_reason_and_exactly_one_actor(make_notification: Make) -> None:
    notification = dead(make_notification)
    user = User.objects.create_user("support")
    with pytest.raises(ValueError, match="reason"):
        notification_replay(notification_id=notification.id, reason=" ", user=user)
    with pytest.raises(ValueError, match="either"):
        notification_replay(notification_id=notification.id, reason="x")
    with pytest.raises(ValueError, match="either"):
        notification_replay(notification_id=notification.id, reason="x", user=user, command="replay_notifications")
    notification.refresh_from_db()
    assert (notification.status, NotificationReplay.objects.count()) == ("dead", 0)


@pytest.mark.django_db(transaction=True)
def test_two_staff_replaying_at_once_queue_it_once_with_one_audit_row(make_notification: Make) -> None:
    notification = dead(make_notification)
    users = [User.objects.create_user(f"support{i}") for i in range(2)]
    barrier = threading.Barrier(2)
    results: list[bool] = []

    def replay(user: User) -> None:
        try:
            barrier.wait(timeout=30)
            results.append(bool(notification_replay(notification_id=notification.id, reason="at once", user=user)))
        finally:
            connection.close()

    threads = [threading.Thread(target=replay, args=(user,)) for user in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(results) == [False, True]
    assert NotificationReplay.objects.filter(notification=notification).count() == 1
    assert OutboxMessage.objects.filter(kwargs__notification_id=str(notification.id)).count() == 2  # create + replay
