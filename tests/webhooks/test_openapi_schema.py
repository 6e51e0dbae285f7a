"""The webhook API's OpenAPI 3 schema (issue 8 part 6): served at /api/schema/, in step with the
code, and checked by schemathesis against a live gunicorn.

The schema is hand-written (apps/webhooks/openapi.yaml): the endpoint takes raw signed bytes, so
the headers and the body schema are not something a generator could read off a DRF view. These
tests keep it honest: the codes and statuses it lists are the catalogue's, the event types the
serializer's, and a live server answers every generated request as the schema says.
"""

from __future__ import annotations

import json
import time

import pytest
import requests
import schemathesis
import yaml
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from apps.webhooks.serializers import EVENT_TYPES
from apps.webhooks.views import _SCHEMA_PATH
from eventplatform.errors import CATALOGUE
from tests.support.processes import process_env, start_web
from tests.support.webhooks import signed_headers

OPERATION = ("/webhooks/{portal_slug}/", "post")
INTAKE_CODES = {
    "malformed_json",
    "invalid_signature",
    "timestamp_out_of_tolerance",
    "unknown_portal",
    "length_required",
    "payload_too_large",
    "invalid_payload",
    "rate_limited",
    "database_unavailable",
    "method_not_allowed",
}
EXAMPLES = 150


def load() -> dict:
    return yaml.safe_load(_SCHEMA_PATH.read_text())


@pytest.mark.django_db
def test_the_schema_is_served_as_yaml_and_json(client: Client) -> None:
    response = client.get("/api/schema/")
    assert response.status_code == 200 and "openapi" in response["Content-Type"]
    assert yaml.safe_load(response.content) == load()
    response = client.get("/api/schema/?format=json")
    assert response["Content-Type"] == "application/vnd.oai.openapi+json"
    assert json.loads(response.content) == load()
    assert load()["openapi"].startswith("3.")


def test_the_schema_lists_what_the_intake_answers() -> None:
    schema = load()
    operation = schema["paths"][OPERATION[0]][OPERATION[1]]
    codes = set(schema["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"])
    assert codes == INTAKE_CODES and codes <= set(CATALOGUE)
    documented = set(operation["responses"])
    # every error status the intake can send on POST is documented (405 is for other methods)
    assert {str(CATALOGUE[c].http_status) for c in INTAKE_CODES - {"method_not_allowed"}} | {"200", "202"} == documented
    headers = {p["name"] for p in operation["parameters"] if p["in"] == "header" and p["required"]}
    assert headers == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert tuple(schema["components"]["schemas"]["WebhookPayload"]["properties"]["type"]["enum"]) == EVENT_TYPES


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_schemathesis_against_a_live_gunicorn(portal) -> None:
    # Given a real gunicorn, and the schema it serves
    web, base_url = start_web(process_env(), workers=1)
    try:
        schema = schemathesis.openapi.from_url(f"{base_url}/api/schema/")
        operation = schema[OPERATION[0]][OPERATION[1].upper()]
        statuses: dict[int, int] = {}

        # When schemathesis generates requests, some re-addressed to the real portal, some of those
        # correctly signed (else all would stop at 404 or 401), and sends them
        @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(), how=st.sampled_from(["signed", "signed", "unsigned", "generated"]))
        def run(case, how: str) -> None:
            sign = how == "signed"
            if how != "generated":
                case.path_parameters["portal_slug"] = "pretix"
            kwargs = case.as_transport_kwargs(base_url=base_url)
            body = kwargs.pop("data", None)
            if "json" in kwargs:
                body = json.dumps(kwargs.pop("json")).encode()
            body = body if isinstance(body, bytes) else (body or "").encode()
            headers = dict(kwargs.pop("headers", {}) or {})
            if sign:
                headers.update(signed_headers(body, timestamp=int(time.time())))
            response = requests.request(
                kwargs.pop("method"),
                kwargs.pop("url"),
                data=body,
                headers=headers,
                params=kwargs.pop("params", None),
                timeout=30,
            )
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            # Then: never a 5xx, and the status, content type, headers and body as the schema says
            case.validate_response(
                response,
                checks=[
                    not_a_server_error,
                    status_code_conformance,
                    content_type_conformance,
                    response_headers_conformance,
                    response_schema_conformance,
                ],
            )

        run()
        print(f"schemathesis: {sum(statuses.values())} requests, statuses {dict(sorted(statuses.items()))}")
        assert statuses.get(202, 0) + statuses.get(422, 0) > 0, "signed cases reached the database"
        assert statuses.get(401, 0) > 0 and statuses.get(404, 0) > 0
    finally:
        web.stop()
