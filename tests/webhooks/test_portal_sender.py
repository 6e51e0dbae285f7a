"""A portal's own sender (CONTRACT section 9, issue 20 item 1): set in the admin and with
create_portal, stored in its normal form, refused with a clear message on a domain outside
EMAIL_SENDER_DOMAINS, and an SMS sender id validated as Twilio's alphanumeric sender id."""

from __future__ import annotations

import datetime as dt
import io
import itertools
import uuid
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client, override_settings
from django.utils import timezone

from apps.notifications import rendering
from apps.notifications.channels import reset_providers
from apps.notifications.models import Notification
from apps.notifications.services import notification_send
from apps.registrations.reminders import reminders_create
from apps.registrations.services import registration_apply
from apps.webhooks import senders
from apps.webhooks.models import Portal
from apps.webhooks.parsing import parse_delivery
from apps.webhooks.services import portal_create, webhook_event_record
from tests.support.sms import SmsApi
from tests.support.smtp import SmtpServer
from tests.support.webhooks import encode, payload

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("sender_domains")]


@pytest.fixture
def sender_domains():
    with override_settings(EMAIL_SENDER_DOMAINS=["conf.example.com", "Events.Example.org"]):
        yield


@pytest.fixture
def admin_client(client: Client) -> Client:
    client.force_login(User.objects.create_superuser("boss", "boss@example.org", "pw"))
    return client


def change_url(portal: Portal) -> str:
    return f"/admin/webhooks/portal/{portal.pk}/change/"


def form_data(portal: Portal, **sender: str) -> dict[str, str]:
    return {
        "slug": portal.slug,
        "name": portal.name,
        "active": "on",
        "rate_limit_per_minute": "",
        "email_from": "",
        "reply_to": "",
        "sms_sender_id": "",
        "default_locale": "en",
        **sender,
        "secrets-TOTAL_FORMS": "0",
        "secrets-INITIAL_FORMS": "0",
        "secrets-MIN_NUM_FORMS": "0",
        "secrets-MAX_NUM_FORMS": "1000",
    }


# --- parsing: what a person types -> the stored form, or the reason it is refused
@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("Ada Conf <hello@conf.example.com>", "Ada Conf <hello@conf.example.com>"),
        ("  Ada Conf   <hello@CONF.Example.com> ", "Ada Conf <hello@conf.example.com>"),
        ("hello@events.example.org", "hello@events.example.org"),
        ('"Ada, Conf" <hello@conf.example.com>', '"Ada, Conf" <hello@conf.example.com>'),
        ("Ünï Çonf <hello@conf.example.com>", "Ünï Çonf <hello@conf.example.com>"),
    ],
)
def test_a_sender_on_an_allowed_domain_is_stored_in_its_normal_form(typed: str, stored: str) -> None:
    assert senders.parse_email_from(typed) == stored
    assert senders.parse_email_from(stored) == stored  # parsing the stored form changes nothing


@pytest.mark.parametrize(
    ("typed", "reason"),
    [
        ("Mallory <ceo@bank.example>", "domain bank.example is not one we may send from"),
        # exact match: a subdomain of an allowed domain is another name, with its own SPF/DKIM
        ("News <news@mail.conf.example.com>", "domain mail.conf.example.com is not one we may send from"),
        ("Look-alike <hello@conf.example.com.evil.example>", "is not one we may send from"),
        ("a@conf.example.com, b@conf.example.com", "must be one address"),
        ("Ada Conf <hello@conf.example.com>\r\nBcc: x@y.example", "one line"),
        ("Ada Conf", "not a valid address"),
        ("Ada <not an address>", "not a valid address"),
    ],
)
def test_a_sender_elsewhere_is_refused_with_the_reason(typed: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        senders.parse_email_from(typed)


def test_the_refusal_names_the_domains_that_are_allowed() -> None:
    with pytest.raises(ValueError) as refused:
        senders.parse_email_from("ceo@bank.example")
    assert "conf.example.com, events.example.org" in str(refused.value)


def test_without_email_sender_domains_the_domain_of_default_from_email_is_allowed() -> None:
    with override_settings(EMAIL_SENDER_DOMAINS=["eventplatform.local"]):  # what settings derive by default
        assert senders.parse_email_from("Ada <ada@eventplatform.local>") == "Ada <ada@eventplatform.local>"


@pytest.mark.parametrize("sender_id", ["AdaConf", "A", "AdaConf2026", "2026Conf"])
def test_an_alphanumeric_sms_sender_id_is_accepted(sender_id: str) -> None:
    assert senders.parse_sms_sender_id(sender_id) == sender_id


@pytest.mark.parametrize(
    "sender_id",
    ["AdaConf20261", "Ada-Conf", "Ada Conf", "Ada_Conf!", "12345", "Ädaconf", ""],
    ids=["12 characters", "hyphen", "space", "symbols", "digits only", "not ASCII", "empty"],
)
def test_a_bad_sms_sender_id_is_refused(sender_id: str) -> None:
    with pytest.raises(ValueError, match="1 to 11 letters and digits"):
        senders.parse_sms_sender_id(sender_id)


# --- the admin
def test_the_admin_saves_the_sender_in_its_normal_form(admin_client: Client, portal: Portal) -> None:
    response = admin_client.post(
        change_url(portal),
        form_data(
            portal,
            email_from="Ada Conf  <Hello@CONF.example.com>",
            reply_to="Team <team@gmail.example>",
            sms_sender_id="AdaConf",
            default_locale="de_AT",
        ),
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    portal.refresh_from_db()
    assert (portal.email_from, portal.reply_to, portal.sms_sender_id, portal.default_locale) == (
        "Ada Conf <Hello@conf.example.com>",
        "Team <team@gmail.example>",
        "AdaConf",
        "de-at",
    )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("email_from", "Mallory <ceo@bank.example>", "The sender&#x27;s domain bank.example is not one we may send"),
        # the field's own length check speaks first (and the browser's input stops at 11)
        ("sms_sender_id", "AdaConf20261", "Ensure this value has at most 11 characters (it has 12)."),
        ("sms_sender_id", "Ada&Conf", "1 to 11 letters and digits"),
        ("reply_to", "two@a.example, three@b.example", "must be one address"),
        ("default_locale", "../../etc", "The locale must look like"),
    ],
)
def test_the_admin_refuses_a_bad_sender_with_a_clear_message(
    admin_client: Client, portal: Portal, field: str, value: str, message: str
) -> None:
    response = admin_client.post(change_url(portal), form_data(portal, **{field: value}))
    assert response.status_code == 200  # the form again, with the error beside the field
    assert message in response.content.decode()
    portal.refresh_from_db()
    assert getattr(portal, field) in ("", "en")


def test_the_model_refuses_a_foreign_sender_too(portal: Portal) -> None:
    portal.email_from = "ceo@bank.example"
    with pytest.raises(Exception, match="not one we may send from"):
        portal.full_clean()


# --- create_portal
def test_create_portal_sets_and_changes_the_sender_idempotently(portal: Portal) -> None:
    out = io.StringIO()
    call_command(
        "create_portal",
        "tito",
        "--email-from",
        "Ada Conf <hello@conf.example.com>",
        "--reply-to",
        "team@gmail.example",
        stdout=out,
    )
    tito = Portal.objects.get(slug="tito")
    assert (tito.email_from, tito.reply_to) == ("Ada Conf <hello@conf.example.com>", "team@gmail.example")
    assert "sender Ada Conf <hello@conf.example.com>" in out.getvalue()
    secret = tito.secrets.get().secret
    # Run again with the same sender: the same portal and secret, nothing added
    call_command("create_portal", "tito", "--email-from", "Ada Conf <hello@conf.example.com>", stdout=io.StringIO())
    assert tito.secrets.get().secret == secret
    # Change only the From of an existing portal: its Reply-To stays
    call_command("create_portal", "pretix", "--email-from", "Pretix Team <team@events.example.org>", stdout=out)
    call_command("create_portal", "tito", "--email-from", "Tito <tito@events.example.org>", stdout=io.StringIO())
    tito.refresh_from_db()
    assert (tito.email_from, tito.reply_to) == ("Tito <tito@events.example.org>", "team@gmail.example")
    portal.refresh_from_db()
    assert portal.email_from == "Pretix Team <team@events.example.org>"
    # An empty value clears it: DEFAULT_FROM_EMAIL again
    call_command("create_portal", "tito", "--email-from", "", stdout=out)
    tito.refresh_from_db()
    assert tito.email_from == ""


def test_create_portal_refuses_a_foreign_sender_and_creates_nothing(portal: Portal) -> None:
    with pytest.raises(CommandError, match="domain bank.example is not one we may send from"):
        call_command("create_portal", "mallory", "--email-from", "Mallory <ceo@bank.example>", stdout=io.StringIO())
    assert not Portal.objects.filter(slug="mallory").exists()
    # an existing portal keeps the sender it had
    call_command("create_portal", "pretix", "--email-from", "Pretix <hi@conf.example.com>", stdout=io.StringIO())
    with pytest.raises(CommandError, match="not one we may send from"):
        call_command("create_portal", "pretix", "--email-from", "Pretix <hi@pretix.example>", stdout=io.StringIO())
    portal.refresh_from_db()
    assert portal.email_from == "Pretix <hi@conf.example.com>"


def test_create_portal_refuses_a_bad_reply_to(portal: Portal) -> None:
    with pytest.raises(CommandError, match="The Reply-To must be one address"):
        call_command("create_portal", "pretix", "--reply-to", "a@b.example, c@d.example", stdout=io.StringIO())


# --- what arrives: the sender and the portal's language on e-mails and SMS
@pytest.fixture
def providers(settings: Any, smtp_server: SmtpServer, sms_api: SmsApi) -> tuple[SmtpServer, SmsApi]:
    """E-mail to the test's aiosmtpd server, SMS to the stand-in Twilio API."""
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", smtp_server.port
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.SMS_API_URL, settings.SMS_ACCOUNT_SID, settings.SMS_AUTH_TOKEN = sms_api.url, "AC_test", "token"
    settings.SMS_FROM = "+4930123456"
    reset_providers()
    return smtp_server, sms_api


_deliveries = itertools.count()


def deliver(portal: Portal, registration_id: str, **fields: Any) -> None:
    """Stored as the intake stores it, applied, and everything it calls for sent (what the workers do)."""
    raw = encode(payload(registration_id, **fields))
    parsed = parse_delivery(raw)
    assert parsed.errors is None, parsed.errors
    recorded = webhook_event_record(
        portal=portal,
        delivery_id=f"d-{next(_deliveries)}",
        event_type=parsed.event_type,
        raw_body=raw,
        payload=parsed.payload,
    )
    assert registration_apply(event_id=str(recorded.event_id), message_id=uuid.uuid4().hex).outcome == "applied"
    send_waiting()


def send_waiting() -> None:
    for notification in Notification.objects.filter(status="pending").order_by("created_at"):
        assert notification_send(notification_id=str(notification.id)).outcome == "sent"


def test_each_portals_sender_is_on_what_its_attendees_receive(
    portal: Portal, providers: tuple[SmtpServer, SmsApi], settings: Any
) -> None:
    smtp, sms = providers
    # Given one portal with its own sender and one without
    call_command(
        "create_portal",
        "pretix",
        "--email-from",
        "Ada Conf <hello@conf.example.com>",
        "--reply-to",
        "team@gmail.example",
        stdout=io.StringIO(),
    )
    Portal.objects.filter(slug="pretix").update(sms_sender_id="AdaConf")
    plain, _, _ = portal_create(slug="tito", name="Tito")
    # When ten attendees register at each (with a phone: an e-mail and an SMS each)
    for number in range(10):
        deliver(portal, f"R-P{number}", email=f"p{number}@example.org", phone="+4915112345678")
        deliver(plain, f"R-T{number}", email=f"t{number}@example.org", phone="+4915112345679")
    # Then every e-mail and SMS names its portal's sender, and the plain portal's the platform's
    assert len(smtp.messages) == 20 and len(sms.received) == 20
    by_portal: dict[str, set[tuple[str, str | None]]] = {"p": set(), "t": set()}
    for message in smtp.messages:
        by_portal[str(message["To"])[0]].add((str(message["From"]), message["Reply-To"]))
    assert by_portal == {
        "p": {("Ada Conf <hello@conf.example.com>", "team@gmail.example")},
        "t": {(settings.DEFAULT_FROM_EMAIL, None)},
    }
    senders_by_number = {(form["To"], form["From"]) for form in sms.received}
    assert senders_by_number == {("+4915112345678", "AdaConf"), ("+4915112345679", "+4930123456")}


def test_reminders_carry_the_portals_sender_too(portal: Portal, providers: tuple[SmtpServer, SmsApi]) -> None:
    smtp, sms = providers
    Portal.objects.filter(pk=portal.pk).update(email_from="Ada Conf <hello@conf.example.com>", sms_sender_id="AdaConf")
    portal.refresh_from_db()
    soon = (timezone.now() + dt.timedelta(minutes=30)).isoformat()
    deliver(portal, "R-SOON", starts_at=soon)
    created = reminders_create()
    assert [n.channel for n in created["reminder_1h"]] == ["email", "sms"]
    send_waiting()
    assert {str(m["From"]) for m in smtp.messages} == {"Ada Conf <hello@conf.example.com>"}
    assert [form["From"] for form in sms.received] == ["AdaConf", "AdaConf"]  # confirmation, reminder


@pytest.mark.parametrize(
    ("attendee_locale", "portal_locale", "subject_starts"),
    [
        ("fr-CA", "de", "Sie sind angemeldet"),  # fr-ca, fr: no wording; the portal's German
        ("fr-CA", "en", "You are registered"),
        ("de-AT", "en", "Sie sind angemeldet"),  # the attendee's language before the portal's
        ("en", "de", "You are registered"),  # the attendee's own locale wins
        ("pt-BR", "de-CH", "Sie sind angemeldet"),  # the portal's region falls back to its language
    ],
)
def test_the_locale_falls_back_to_the_language_then_the_portals_default_then_english(
    portal: Portal,
    providers: tuple[SmtpServer, SmsApi],
    attendee_locale: str,
    portal_locale: str,
    subject_starts: str,
) -> None:
    smtp, sms = providers
    Portal.objects.filter(pk=portal.pk).update(default_locale=portal_locale)
    portal.refresh_from_db()
    deliver(portal, "R-LOC", locale=attendee_locale, starts_at="2030-12-03T09:00:00+01:00")
    (message,) = smtp.messages
    assert str(message["Subject"]).startswith(subject_starts), message["Subject"]
    body = message.get_body(("plain",)).get_content()
    german = subject_starts.startswith("Sie")
    # dates and times in the event's timezone, named in the wording's language
    assert ("Dienstag, 3. Dezember 2030, 09:00 Uhr" if german else "Tuesday, 3 December 2030, 09:00") in body
    (sms_form,) = sms.received
    assert ("Dez" in sms_form["Body"] or "Dezember" in sms_form["Body"]) is german


def test_the_locale_chain() -> None:
    assert rendering._locales("fr-CA", "de") == ["fr-ca", "fr", "de", "en"]
    assert rendering._locales("fr_CA", "de-ch") == ["fr-ca", "fr", "de-ch", "de", "en"]
    assert rendering._locales("en", "de") == ["en", "de"]
    assert rendering._locales("../x", "de") == ["de", "en"]  # not a locale name: skipped
    assert rendering._locales("", "") == ["en"]
