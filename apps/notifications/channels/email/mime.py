"""An e-mail's bytes for the SMTP conversation, without the stdlib's generic MIME machinery.

Django builds each message with `email.mime` and serialises it with `email.generator`: every
header goes through `email.header`'s folding and every address through `email`'s full RFC 5322
parser. For our shape (a text body, at most one HTML alternative, a handful of headers) that was
a third of a send's CPU (docs/performance.md). `message_bytes` writes the same MIME structure
directly when a message has that shape, and hands any other message to Django unchanged
(`email.message().as_bytes()`), so only the common case is ours. tests/notifications/test_mime.py
holds the two to the same result: byte for byte where no header needs folding, and parsed (same
headers, parts and body bytes) where one does.
"""

from __future__ import annotations

import functools
import re
import secrets
from email.header import Header
from email.utils import formatdate, getaddresses
from typing import cast

from django.conf import settings
from django.core.mail import EmailMessage
from django.core.mail.message import make_msgid, sanitize_address
from django.core.mail.utils import DNS_NAME

MAX_HEADER_LINE = 78  # RFC 5322 2.1.1: a line SHOULD be no longer
MAX_LINE = 998  # RFC 5322 2.1.1: MUST; a body line beyond it makes Django use quoted-printable
_NEWLINE = re.compile(r"\r\n|\r|\n")  # the line breaks email.generator rewrites as CRLF
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_ADDRESS = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]{{1,63}}(?:\.[A-Za-z0-9-]{{1,63}})*")
# Headers whose value Django derives itself or treats specially: a message setting one of them
# through `headers=` is left to Django.
_DJANGO_HEADERS = frozenset(
    {"from", "to", "cc", "reply-to", "subject", "content-type", "mime-version", "content-transfer-encoding"}
)


def new_boundary() -> str:
    """A MIME boundary: 128 random bits cannot occur in a body by chance, so no line of the body
    needs checking against it (the stdlib's own draw compiles a regular expression per message
    to do so)."""
    return f"=_{secrets.token_hex(16)}"


def envelope_address(address: str, encoding: str = "utf-8") -> str:
    """The address for MAIL FROM / RCPT TO, as Django's SMTP backend gives it (sanitize_address).
    A plain dot-atom ASCII address is returned as it is, which is what sanitize_address returns
    for it after running the full header parser. Raises ValueError when it cannot be addressed."""
    if len(address) <= 254 and _PLAIN_ADDRESS.fullmatch(address):
        return address
    return sanitize_address(address, encoding)


@functools.lru_cache(maxsize=32)
def envelope_sender(address: str, encoding: str = "utf-8") -> str:
    """envelope_address for a sender: one of a few configured addresses, so parsed once each."""
    return envelope_address(address, encoding)


def message_bytes(email: EmailMessage, boundary: str | None = None) -> bytes:
    """What `email.message().as_bytes(linesep="\\r\\n")` gives, written directly when it can be."""
    # Django's SafeMIME classes take `linesep` (the stubs type the result as the stdlib's Message).
    return _plain_bytes(email, boundary or new_boundary()) or email.message().as_bytes(linesep="\r\n")  # type: ignore[call-arg]


def _plain_bytes(email: EmailMessage, boundary: str) -> bytes | None:
    alternatives = getattr(email, "alternatives", [])
    extra = {name.lower() for name in email.extra_headers}
    if (
        email.attachments
        or email.cc
        or email.bcc
        or email.reply_to
        or not email.to
        or email.content_subtype != "plain"
        or [mimetype for _, mimetype in alternatives] not in ([], ["text/html"])
        or (email.encoding or settings.DEFAULT_CHARSET).lower() != "utf-8"
        or extra & _DJANGO_HEADERS
    ):
        return None
    # As Django: with an alternative, an empty text body is left out.
    maybe_parts = [
        *([_text_part(str(email.body), "plain")] if email.body or not alternatives else []),
        *(_text_part(content, "html") for content, _ in alternatives),
    ]
    maybe_headers = [
        _header("Subject", str(email.subject)),
        _sender_header(str(email.from_email)),
        _address_header("To", ", ".join(str(address) for address in email.to)),
        *([] if "date" in extra else [f"Date: {formatdate(localtime=settings.EMAIL_USE_LOCALTIME)}\r\n"]),
        *([] if "message-id" in extra else [f"Message-ID: {make_msgid(domain=DNS_NAME)}\r\n"]),
        *(_header(name, str(value)) for name, value in email.extra_headers.items()),
    ]
    if None in maybe_parts or None in maybe_headers:
        return None
    parts = cast("list[tuple[str, bytes]]", maybe_parts)
    headers = cast("list[str]", maybe_headers)
    if not alternatives:  # a single part: its own headers come first, then the message's
        ((part_headers, body),) = parts
        return f"{part_headers}{''.join(headers)}\r\n".encode("ascii") + body
    top = f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"\r\nMIME-Version: 1.0\r\n'
    delimiter = f"--{boundary}\r\n".encode("ascii")
    chunks = [f"{top}{''.join(headers)}\r\n".encode("ascii")]
    for part_headers, body in parts:
        chunks += [delimiter, f"{part_headers}\r\n".encode("ascii"), body, b"\r\n"]
    return b"".join([*chunks, f"--{boundary}--\r\n".encode("ascii")])


def _text_part(text: str, subtype: str) -> tuple[str, bytes] | None:
    """A text/<subtype> part's headers and body as SafeMIMEText writes them, or None where it
    would not write it as 7bit/8bit (a line over MAX_LINE gets quoted-printable) or cannot (text
    that is not valid UTF-8)."""
    try:
        body = "\r\n".join(_NEWLINE.split(text)).encode("utf-8")
    except UnicodeEncodeError:
        return None
    if any(len(line.encode("utf-8")) > MAX_LINE for line in text.splitlines()):
        return None
    encoding = "7bit" if text.isascii() else "8bit"
    return (
        f'Content-Type: text/{subtype}; charset="utf-8"\r\nMIME-Version: 1.0\r\n'
        f"Content-Transfer-Encoding: {encoding}\r\n"
    ), body


def _header(name: str, value: str) -> str | None:
    """`Name: value` CRLF, folded at spaces past MAX_HEADER_LINE; RFC 2047 encoded words for a
    value that is not ASCII (as Django writes it). None for a value with a line break: Django
    refuses it (BadHeaderError), so the caller hands the message to Django."""
    if "\r" in value or "\n" in value:
        return None
    if not value.isascii():
        return f"{name}: {Header(value, 'utf-8', header_name=name).encode(linesep=chr(13) + chr(10))}\r\n"
    return _fold(f"{name}: {value}", len(name) + 2)


@functools.lru_cache(maxsize=32)
def _sender_header(value: str) -> str | None:
    return _address_header("From", value)


def _address_header(name: str, value: str) -> str | None:
    """An address header: as it is when ASCII, each address sanitised when not (as Django does)."""
    if "\r" in value or "\n" in value:
        return None
    if not value.isascii():
        value = ", ".join(sanitize_address(address, "utf-8") for address in getaddresses((value,)))
    return _fold(f"{name}: {value}", len(name) + 2)


def _fold(line: str, start: int) -> str | None:
    """Fold before spaces so that lines keep within MAX_HEADER_LINE where the words allow; None
    when a word is too long to fit a line at all."""
    pieces, begin = [], 0
    while len(line) - begin > MAX_HEADER_LINE:
        cut = line.rfind(" ", max(begin + 1, start), begin + MAX_HEADER_LINE + 1)
        if cut == -1:  # a word longer than a line: fold at the next space after it
            cut = line.find(" ", begin + MAX_HEADER_LINE)
            if cut == -1:
                break
        pieces.append(line[begin:cut])
        begin = cut
    pieces.append(line[begin:])
    if any(len(piece) > MAX_LINE for piece in pieces):
        return None
    return "\r\n".join(pieces) + "\r\n"
