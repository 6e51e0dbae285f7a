"""The contract's error body for every 4xx outside the admin (CONTRACT section 4: errors are
`{"error": {"code", "message"}}`; hostile input gets a 4xx with that body, never a 5xx).

Our own views answer with it already. What Django and the libraries answer by themselves does not:
a form too large or with too many fields (400), a path that is no URL or no uuid (404), a method a
class-based view does not have (405), and django-anymail's refusal of a tracking webhook whose basic
auth or signature is wrong (an exception it leaves to Django, logged as an ERROR with a traceback on
every forged call, as Django logs an oversized form). This middleware gives those the same JSON body
and stable code, and logs such a refusal once, as a warning. The admin (and its static files) keeps
Django's HTML pages for staff.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog
from anymail.exceptions import AnymailWebhookValidationFailure
from django.core.exceptions import BadRequest, SuspiciousOperation
from django.http import HttpRequest, HttpResponse, JsonResponse

from eventplatform.errors import describe

log = structlog.get_logger("http")

# Status -> the code and message of a response that came without the contract's body.
_BY_STATUS: dict[int, tuple[str, str]] = {
    400: ("bad_request", "The request could not be read: malformed, too large, or too many form fields."),
    403: ("forbidden", "Not allowed."),
    404: ("not_found", "Nothing here."),
    405: ("method_not_allowed", "This method is not allowed here; the Allow header lists those that are."),
}
_HTML_PATHS = ("/admin/", "/static/")
_KEPT_HEADERS = ("Allow", "Retry-After")


def error_body(code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=describe(code).http_status)


class JsonErrorMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (
            response.status_code not in _BY_STATUS
            or request.path_info.startswith(_HTML_PATHS)
            or response.get("Content-Type", "").startswith("application/json")
        ):
            return response
        code, message = _BY_STATUS[response.status_code]
        replaced = error_body(code, message)
        for name in _KEPT_HEADERS:
            if name in response:
                replaced[name] = response[name]
        return replaced

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        """A view's SuspiciousOperation or BadRequest (anymail's refusal; a form too large, with too many
        fields or not in UTF-8, raised when the view reads it) outside the admin: a 400 with the body and
        one warning line, not the ERROR with a traceback Django logs for it (hostile input is no incident)."""
        if not isinstance(exception, SuspiciousOperation | BadRequest) or request.path_info.startswith(_HTML_PATHS):
            return None
        path = request.path_info[:200]
        if isinstance(exception, AnymailWebhookValidationFailure):
            log.warning("esp.tracking_refused", error_code="esp_webhook_refused", path=path)
            response = error_body(
                "esp_webhook_refused", "Missing or wrong webhook authentication or signature, or an unreadable body."
            )
        else:
            log.warning("http.bad_request", error_code="bad_request", path=path, reason=type(exception).__name__)
            response = error_body("bad_request", _BY_STATUS[400][1])
        response._has_been_logged = True  # type: ignore[attr-defined]  # logged above, not again by django.request
        return response
