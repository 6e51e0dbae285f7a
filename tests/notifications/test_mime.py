"""mime.py writes what Django's e-mail message gives, without email.mime/email.generator.

Byte for byte where no header needs folding; where one does (or is RFC 2047-encoded), both parse
to the same headers, parts and body bytes. Everything outside the plain shape is Django's own.
"""

from __future__ import annotations

import email
import email.policy
import re
from unittest import mock

import pytest
from django.core.mail import BadHeaderError, EmailMultiAlternatives
from django.core.mail.message import sanitize_address
from hypothesis import given, settings
from hypothesis import strategies as st

from apps.notifications.channels.email import mime

BOUNDARY = "=_" + "5" * 32
FIXED = {
    "X-Eventplatform-Notification-Id": "9b1d3c1e-0000-4000-8000-000000000001",
    "Message-ID": "<171.1.2@eventplatform.local>",
    "Date": "Tue, 01 Dec 2026 13:36:57 -0000",
}


def _email(
    subject="Your registration is confirmed",
    text="Hello Ada,\n\nsee you there.\n",
    html: str | None = "<p>Hello Ada,</p>\n",
    to=("ada@example.org",),
    headers=None,
    **kwargs,
):
    message = EmailMultiAlternatives(subject=subject, body=text, to=list(to), headers=headers or dict(FIXED), **kwargs)
    if html is not None:
        message.attach_alternative(html, "text/html")
    return message


def _django_bytes(message) -> bytes:
    with mock.patch("email.generator.Generator._make_boundary", return_value=BOUNDARY):
        return message.message().as_bytes(linesep="\r\n")


def _parsed(raw: bytes):
    message = email.message_from_bytes(raw, policy=email.policy.default)
    # Stripped: Django folds a long encoded subject right after "Subject:", which parses with a
    # leading space; ours starts on the first line.
    headers = [(name.lower(), str(value).strip()) for name, value in message.items() if name.lower() != "content-type"]
    parts = [
        (
            part.get_content_type(),
            part.get_content_charset(),
            part["Content-Transfer-Encoding"],
            part.get_payload(decode=True),
        )
        for part in message.walk()
        if not part.is_multipart()
    ]
    return message.get_content_type(), sorted(headers), parts


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("text only", _email(html=None)),
        ("text and html", _email()),
        ("non-ASCII bodies (8bit)", _email(text="Grüße, Zoë!\n", html="<p>Grüße, Zoë!</p>")),
        ("CRLF, CR and LF in the body", _email(text="one\r\ntwo\rthree\nfour", html="<p>\r\n</p>\r")),
        ("no trailing newline, dots and From at line starts", _email(text="From here\n.\n..x", html=None)),
        ("a line of exactly 998 bytes", _email(text="x" * 998 + "\nend")),
        ("no Date or Message-ID given", _email(headers={"X-Eventplatform-Notification-Id": "n-1"})),
    ],
)
def test_plain_messages_are_byte_for_byte_djangos(case, message, monkeypatch):
    monkeypatch.setattr(mime, "formatdate", lambda localtime=False: "Tue, 01 Dec 2026 13:36:57 -0000")
    monkeypatch.setattr(mime, "make_msgid", lambda domain=None: "<fixed@eventplatform.local>")
    with (
        mock.patch("django.core.mail.message.formatdate", return_value="Tue, 01 Dec 2026 13:36:57 -0000"),
        mock.patch("django.core.mail.message.make_msgid", return_value="<fixed@eventplatform.local>"),
    ):
        expected = _django_bytes(message)
    ours = mime._plain_bytes(message, BOUNDARY)
    assert ours is not None, case
    assert ours == expected, case


@pytest.mark.parametrize(
    ("case", "message"),
    [
        (
            "long ASCII subject",
            _email(
                subject="You are registered: PyData Berlin 2026: Data, Science and the Python "
                "Community, the conference for everyone"
            ),
        ),
        (
            "non-ASCII subject",
            _email(subject="Anmeldung bestätigt: Größte Konferenz Süddeutschlands 2026 in München, Straße der Einheit"),
        ),
        ("non-ASCII display name", _email(to=("Zoë Çelik <zoe@example.org>",))),
        ("IDN domain", _email(to=("ada@bücher.example",))),
        ("two recipients", _email(to=("ada@example.org", "Grace <grace@example.org>"))),
        ("non-ASCII sender name", _email(from_email="Événements <no-reply@eventplatform.local>")),
        ("a long word in the subject", _email(subject="x" * 120 + " tail")),
    ],
)
def test_folded_and_encoded_headers_parse_as_djangos(case, message):
    ours = mime._plain_bytes(message, BOUNDARY)
    assert ours is not None, case
    assert _parsed(ours) == _parsed(_django_bytes(message)), case
    # Folded where a space allows: a longer line is one word (after the header's name).
    for line in ours.split(b"\r\n\r\n")[0].split(b"\r\n"):
        assert len(line) <= mime.MAX_HEADER_LINE or b" " not in line.split(b": ", 1)[-1].strip(), (case, line)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("a body line over 998 bytes (quoted-printable)", _email(text="y" * 999)),
        ("an attachment", _email(attachments=[("a.txt", "hi", "text/plain")])),
        ("a Cc", _email(cc=["c@example.org"])),
        ("a Reply-To", _email(reply_to=["r@example.org"])),
        ("a second alternative", _email()),
        ("a From header override", _email(headers={**FIXED, "From": "other@example.org"})),
        ("a non-UTF-8 charset", _email(html=None)),
    ],
)
def test_other_shapes_are_left_to_django(case, message):
    if case == "a second alternative":
        message.attach_alternative("<p>again</p>", "text/html")
    if case == "a non-UTF-8 charset":
        message.encoding = "iso-8859-1"
    assert mime._plain_bytes(message, BOUNDARY) is None, case
    assert _parsed(mime.message_bytes(message)) == _parsed(message.message().as_bytes(linesep="\r\n")), case


def test_a_header_with_a_line_break_is_refused_as_django_refuses_it():
    with pytest.raises(BadHeaderError):
        mime.message_bytes(_email(subject="Hi\r\nBcc: victim@example.org"))
    with pytest.raises(BadHeaderError):
        mime.message_bytes(_email(headers={**FIXED, "X-Note": "a\nb"}))


def test_text_that_is_not_valid_utf8_fails_as_django_fails():
    with pytest.raises(UnicodeEncodeError):
        mime.message_bytes(_email(text="lone \ud800 surrogate"))


def test_every_message_gets_its_own_boundary():
    first, second = mime.message_bytes(_email()), mime.message_bytes(_email())
    boundaries = [re.search(rb'boundary="([^"]+)"', raw).group(1) for raw in (first, second)]
    assert boundaries[0] != boundaries[1]
    assert all(len(boundary) == 34 for boundary in boundaries)


_words = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1, max_size=30)


@settings(max_examples=150, deadline=None)
@given(
    subject=st.lists(_words, min_size=1, max_size=12).map(" ".join),
    text=st.text(st.characters(blacklist_categories=("Cs",)), max_size=400),
    html=st.one_of(st.none(), st.text(st.characters(blacklist_categories=("Cs",)), max_size=200)),
)
def test_any_subject_and_bodies_parse_as_djangos(subject, text, html):
    subject = " ".join(subject.split()) or "x"  # as rendering.render gives it
    message = _email(subject=subject, text=text, html=html)
    assert _parsed(mime.message_bytes(message, BOUNDARY)) == _parsed(_django_bytes(message))


@settings(max_examples=300, deadline=None)
@given(st.from_regex(mime._PLAIN_ADDRESS, fullmatch=True).filter(lambda address: len(address) <= 254))
def test_a_plain_address_is_what_sanitize_address_returns_for_it(address):
    assert mime.envelope_address(address) == sanitize_address(address, "utf-8")


@pytest.mark.parametrize(
    "address",
    [
        "ada",
        "ada@",
        "@example.org",
        "ada@@example.org",
        "ada@exa mple.org",
        "ada@" + "x" * 64 + ".org",
        "a..b@example.org",
        ".ada@example.org",
    ],
)
def test_other_addresses_get_djangos_answer(address):
    try:
        expected = sanitize_address(address, "utf-8")
    except ValueError:
        with pytest.raises(ValueError):
            mime.envelope_address(address)
    else:
        assert mime.envelope_address(address) == expected
