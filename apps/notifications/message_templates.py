"""Wording edited in the admin: saving a version (checked first), reverting, adding a locale from the
shipped files, the preview, the diff and the test send. The admin is a thin layer over these.

Every save inserts a MessageTemplateVersion (history is append-only; the latest is the one sent), in
a transaction that first locks the template row, so two staff saving at once get numbers n and n+1,
never the same. The per-process store (template_store.py) is told after the commit; other processes
see the new version within MESSAGE_TEMPLATES_CHECK_SECONDS. Crash windows: a save is one
transaction (the version exists or not); a test send that dies after the provider took it just
leaves the staff member one e-mail, nothing is recorded about it.
"""

from __future__ import annotations

import difflib
import re
import uuid
from dataclasses import dataclass
from typing import Any

import structlog
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import transaction
from django.template import Context
from django.template.loader import get_template
from django.utils import translation

from apps.notifications import channels, rendering, template_store
from apps.notifications.errors import ProviderError
from apps.notifications.models import MessageTemplate, MessageTemplateVersion, Notification
from apps.notifications.providers import OutgoingMessage
from apps.notifications.template_engine import (
    SAMPLE_CONTEXT,
    SMS_MAX_SEGMENTS,
    Segments,
    TemplateRefused,
    compile_template,
    sms_segments,
    template_errors,
)
from eventplatform.errors import EventPlatformError
from eventplatform.logging import mask_email

log = structlog.get_logger(__name__)

# The parts of an e-mail's version: (field, shipped file part, is HTML).
_EMAIL_PARTS = (("subject", "subject.txt", False), ("text", "body.txt", False), ("html", "body.html", True))
_INCLUDE = re.compile(r"""{%\s*include\s+["']([^"']+)["']\s*%}""")
# What the shipped files need and the safe engine does without: `date` is built in, and text
# templates have autoescape off already.
_DROPPED_TAGS = re.compile(r"{%\s*(load\s+event_dates|autoescape\s+off|endautoescape)\s*%}")


class TemplateSaveRefused(EventPlatformError):
    """The version was not saved: a part does not compile, names an unknown variable or does not render."""

    code = "template_refused"

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{field}: {message}" for field, message in errors.items()))
        self.errors = errors


class TestSendRefused(EventPlatformError):
    """The test message was not sent (no address of one's own, or the provider refused it)."""

    code = "template_test_send_failed"


def parts(channel: str) -> tuple[tuple[str, str, bool], ...]:
    """A text-only channel (SMS) has one part, its text; an e-mail subject, text and HTML."""
    text_template = channels.channel(channel).text_template
    return (("text", text_template, False),) if text_template else _EMAIL_PARTS


def is_text_only(channel: str) -> bool:
    return channels.channel(channel).text_template is not None


@dataclass(frozen=True)
class Preview:
    subject: str
    text: str
    html: str | None
    segments: Segments | None  # SMS only
    context: dict[str, Any]  # what it was rendered with


def normalise_locale(locale: str) -> str:
    return locale.strip().lower().replace("_", "-")


def _shipped_source(name: str) -> str:
    """A shipped file's source with its includes inlined and the tags the safe engine lacks removed."""
    source: str = get_template(name).template.source  # type: ignore[attr-defined]
    source = _INCLUDE.sub(lambda match: _shipped_source(match.group(1)), source)
    return _DROPPED_TAGS.sub("", source)


def shipped_default(*, kind: str, channel: str, role: str, locale: str) -> dict[str, str] | None:
    """The shipped wording of the chain for these, as version fields ('' for a part without a
    file); None when the channel has no such message (e.g. no SMS for an update)."""
    fields: dict[str, str] = {}
    for field, part, _html in parts(channel):
        template = rendering._template(kind, role, locale, part)
        fields[field] = _shipped_source(str(template.origin.template_name)) if template is not None else ""
    return fields if fields["text"].strip() else None


def sample_context(*, template: MessageTemplate, registration_id: int | None = None) -> dict[str, Any]:
    """What a preview renders: the sample, or the registration's data as its latest notification
    carries it; role and locale are the template's (the preview shows this template's wording)."""
    context = dict(SAMPLE_CONTEXT)
    if registration_id is not None:
        notification = Notification.objects.filter(registration_id=registration_id).order_by("-created_at").first()
        if notification is None:
            raise LookupError(f"No notification of registration {registration_id} to take its data from.")
        context.update(notification.context)
    context.update(role=template.role, locale=template.locale)
    return rendering.template_context(context)


def _check(*, channel: str, subject: str, text: str, html: str) -> None:
    values = dict(subject=subject, text=text, html=html)
    context = rendering.template_context(SAMPLE_CONTEXT)
    errors: dict[str, str] = {}
    for field, _part, is_html in parts(channel):
        if not values[field].strip():
            if field != "html":
                errors[field] = "This part may not be empty."
            continue
        try:
            template_errors(values[field], html=is_html, context=context)
        except TemplateRefused as refused:
            errors[field] = str(refused)
    if channel == Notification.Channel.SMS and "text" not in errors:
        rendered = " ".join(compile_template(text, html=False).render(Context(context, autoescape=False)).split())
        segments = sms_segments(rendered)
        if segments.count > SMS_MAX_SEGMENTS:
            errors["text"] = (
                f"The sample renders to {len(rendered)} characters, {segments.count} SMS parts ({segments.encoding}); "
                f"at most {SMS_MAX_SEGMENTS} parts are allowed. Shorten it."
            )
    if errors:
        raise TemplateSaveRefused(errors)


def _actor(user: AbstractBaseUser | AnonymousUser | None) -> tuple[Any, str]:
    if user is None or not user.is_authenticated:
        return None, "system"
    return user, user.get_username()


@transaction.atomic
def message_template_save(
    *,
    template: MessageTemplate,
    subject: str,
    text: str,
    html: str,
    user: AbstractBaseUser | AnonymousUser | None,
    note: str = "",
) -> MessageTemplateVersion:
    """A new version (the active one from now on), refused with TemplateSaveRefused (the failing
    part and line) when a part does not compile, names an unknown variable or does not render."""
    if is_text_only(template.channel):
        subject, html = "", ""
    _check(channel=template.channel, subject=subject, text=text, html=html)
    MessageTemplate.objects.select_for_update().filter(id=template.id).first()  # numbers in save order
    last = MessageTemplateVersion.objects.filter(template=template).order_by("-number").first()
    created_by, name = _actor(user)
    version = MessageTemplateVersion.objects.create(
        template=template,
        number=(last.number + 1) if last else 1,
        subject=subject,
        text=text,
        html=html,
        created_by=created_by,
        created_by_name=name,
        note=note,
    )
    # Now, for the rest of this transaction (a preview or a send right after the save), and again
    # after the commit, for this process's other threads.
    template_store.invalidate()
    transaction.on_commit(template_store.invalidate)
    log.info("message_template.saved", template_id=template.id, version=version.number, by=name)
    return version


def message_template_revert(
    *, template: MessageTemplate, number: int, user: AbstractBaseUser | AnonymousUser | None
) -> MessageTemplateVersion:
    """A new version copying version `number` (history stays append-only)."""
    old = MessageTemplateVersion.objects.get(template=template, number=number)
    return message_template_save(
        template=template,
        subject=old.subject,
        text=old.text,
        html=old.html,
        user=user,
        note=f"revert to version {number}",
    )


@transaction.atomic
def message_template_add_locale(
    *, locale: str, portal_id: int | None, user: AbstractBaseUser | AnonymousUser | None
) -> list[MessageTemplate]:
    """A template for every kind x channel x role the shipped files have, for `locale` (and the
    portal, or all portals), each with version 1 copied from the shipped wording of its locale chain
    (e.g. `fr-ca` starts from `en` until someone translates it). Existing templates are left as they are."""
    locale = normalise_locale(locale)
    if not rendering._LOCALE.fullmatch(locale):
        raise ValueError(f"'{locale}' is not a locale code such as fr or fr-ca.")
    created = []
    for kind in Notification.Kind.values:
        for channel in Notification.Channel.values:
            for role in MessageTemplate.Role.values:
                fields = shipped_default(kind=kind, channel=channel, role=role, locale=locale)
                if fields is None:
                    continue
                template, new = MessageTemplate.objects.get_or_create(
                    portal_id=portal_id,  # type: ignore[misc]  # None: for all portals
                    kind=kind,
                    channel=channel,
                    locale=locale,
                    role=role,
                )
                if new:
                    message_template_save(template=template, user=user, note="shipped default", **_all(fields))
                    created.append(template)
    return created


def _all(fields: dict[str, str]) -> dict[str, str]:
    return {"subject": fields.get("subject", ""), "text": fields["text"], "html": fields.get("html", "")}


def message_template_preview(
    *, template: MessageTemplate, subject: str, text: str, html: str, context: dict[str, Any]
) -> Preview:
    """The message these parts make with `context`, rendered as a send would (TemplateSaveRefused
    when they cannot be: the preview says why, as the save would)."""
    _check(channel=template.channel, subject=subject, text=text, html=html)
    with translation.override(template.locale):
        rendered_text = compile_template(text, html=False).render(Context(context, autoescape=False))
        if is_text_only(template.channel):
            body = " ".join(rendered_text.split())
            segments = sms_segments(body) if template.channel == Notification.Channel.SMS else None
            return Preview(subject="", text=body, html=None, segments=segments, context=context)
        rendered_subject = compile_template(subject, html=False).render(Context(context, autoescape=False))
        rendered_html = compile_template(html, html=True).render(Context(context, autoescape=True)) if html else None
    return Preview(
        subject=" ".join(rendered_subject.split()),
        text=rendered_text.strip() + "\n",
        html=rendered_html,
        segments=None,
        context=context,
    )


def version_diff(old: MessageTemplateVersion | None, new: MessageTemplateVersion) -> str:
    """A unified diff of every part, from `old` (nothing: the first version) to `new`."""
    lines: list[str] = []
    for field in ("subject", "text", "html"):
        before = getattr(old, field) if old else ""
        after = getattr(new, field)
        lines += difflib.unified_diff(
            before.splitlines(),
            after.splitlines(),
            fromfile=f"{field} (version {old.number})" if old else f"{field} (none)",
            tofile=f"{field} (version {new.number})",
            lineterm="",
        )
    return "\n".join(lines)


def message_template_send_test(
    *, template: MessageTemplate, preview: Preview, user: AbstractBaseUser | AnonymousUser
) -> str:
    """Send the preview to the staff member's own address through the e-mail provider (the real
    path: the same provider, sender and MIME as attendees get); no Notification row. An SMS
    wording is sent by e-mail too (staff have no number on file). Returns the address."""
    address = getattr(user, "email", "")
    if not address:
        raise TestSendRefused("Your user has no e-mail address: add one to your account to receive test messages.")
    if is_text_only(template.channel):
        subject = f"[Test] {template.channel.upper()} {template.kind} ({template.locale}, {template.role})"
        parts = f", {preview.segments.count} SMS part(s)" if preview.segments else ""
        text, html = f"{preview.text}\n\n({len(preview.text)} characters{parts})\n", None
    else:
        subject, text, html = f"[Test] {preview.subject}", preview.text, preview.html
    # The preview's context gives the e-mail channel what it reads from a notification's (the
    # portal's sender, when a registration of that portal was chosen), except the calendar UID: a
    # test must not put an attendee's entry into the staff member's calendar.
    context = {key: value for key, value in preview.context.items() if key != "calendar_uid"}
    message = OutgoingMessage(
        notification_id=str(uuid.uuid4()),
        recipient=address,
        subject=subject,
        text=text,
        html=html,
        kind=template.kind,
        context=context,
    )
    try:
        channels.providers_for(Notification.Channel.EMAIL)[0].send(message)
    except ProviderError as error:
        log.warning(
            "message_template.test_send_failed",
            error_code="template_test_send_failed",
            error=error.message[:300],
            recipient=mask_email(address),
        )
        raise TestSendRefused(f"The e-mail provider refused the test message: {error.message}") from error
    log.info("message_template.test_sent", template_id=template.id, recipient=mask_email(address))
    return address
