"""The OpenAPI document: valid OpenAPI 3.1, in step with the Klein routes and the error codes
of the source, and (through tests.contract) matched by what the daemon really answers."""

from __future__ import annotations

import ast
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_openapi

import twisted_rta
from tests.conftest import make_daemon
from tests.contract import Contract, check, escape_pointer, load_document
from tests.helpers import NOW, Reply, raw_http
from twisted_rta.config import config_from_mapping
from twisted_rta.events.rules import MAX_ID_LENGTH, MAX_SUBJECT_LENGTH, MAX_TYPE_LENGTH
from twisted_rta.web.dashboard import DashboardApp
from twisted_rta.web.ingest import IngestApp
from twisted_rta.web.ops import OpsApp
from twisted_rta.web.queries import QueryApp
from twisted_rta.web.routes import DASHBOARD, INGEST_APP, OPS, QUERY_APP, TRACKER, route_table
from twisted_rta.web.tracker import TrackerApp

REPO = Path(__file__).resolve().parent.parent
PACKAGE = Path(twisted_rta.__file__).resolve().parent
SPEC = PACKAGE / "web" / "openapi.yaml"
DOCS_COPY = REPO / "docs" / "openapi.yaml"
OPERATION_METHODS = ("get", "put", "post", "delete", "patch", "head", "trace")
MINUTE = NOW - NOW % 60
REQUEST_ID = {"X-Request-ID": "req-1"}
JSON = {"content-type": "application/json; charset=utf-8", "x-request-id": "req-1"}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return load_document()


@pytest.fixture(scope="module")
def contract(document: dict[str, Any]) -> Contract:
    return Contract(document)


def operations(document: Mapping[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for template, item in document["paths"].items():
        for method in (*OPERATION_METHODS, "options"):
            if method in item:
                yield template, method, item[method]


def error(code: str, **details: Any) -> bytes:
    return json.dumps({"error": True, "code": code, "message": "m", **details}).encode()


# -- the document itself ---------------------------------------------------------------------


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    validate_openapi(document)  # openapi-spec-validator, against the OAS 3.1 schema


def test_the_document_version_is_the_package_version(document: dict[str, Any]) -> None:
    assert document["info"]["version"] == twisted_rta.__version__


def test_docs_copy_is_a_relative_symlink_to_the_package_file() -> None:
    assert DOCS_COPY.is_symlink()
    target = os.readlink(DOCS_COPY)
    assert not os.path.isabs(target), target
    assert DOCS_COPY.resolve() == SPEC
    assert DOCS_COPY.read_bytes() == SPEC.read_bytes()


def test_every_component_schema_is_a_valid_2020_12_schema(document: dict[str, Any]) -> None:
    for name, schema in document["components"]["schemas"].items():
        Draft202012Validator.check_schema(schema)
        assert isinstance(schema, dict) and schema, name


def test_every_example_conforms_to_its_schema(document: dict[str, Any], contract: Contract) -> None:
    checked = 0
    for pointer, media in media_types(document):
        if "example" in media and "schema" in media:
            contract.validator(pointer + "/schema").validate(media["example"])
            checked += 1
    for name, parameter in document["components"]["parameters"].items():
        if "example" in parameter:
            pointer = f"/components/parameters/{name}/schema"
            contract.validator(pointer).validate(parameter["example"])
            checked += 1
    assert checked >= 15


def media_types(document: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every media type object of the document with its JSON pointer."""

    def walk(node: Any, pointer: str) -> Iterator[tuple[str, dict[str, Any]]]:
        if isinstance(node, dict):
            for key, value in node.items():
                here = f"{pointer}/{escape_pointer(str(key))}"
                if key == "content" and isinstance(value, dict):
                    for media_type, media in value.items():
                        yield f"{here}/{escape_pointer(media_type)}", media
                else:
                    yield from walk(value, here)
        elif isinstance(node, list):
            for index, value in enumerate(node):
                yield from walk(value, f"{pointer}/{index}")

    yield from walk(document, "")


def test_documented_limits_are_the_code_and_config_defaults(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    limits = config_from_mapping({}).limits
    event = schemas["Event"]["properties"]
    assert schemas["EventArray"]["maxItems"] == limits.max_batch_events
    assert event["properties"]["maxProperties"] == limits.max_properties
    assert event["id"]["maxLength"] == MAX_ID_LENGTH
    assert event["user_id"]["maxLength"] == event["session_id"]["maxLength"] == MAX_SUBJECT_LENGTH
    assert schemas["EventType"]["maxLength"] == MAX_TYPE_LENGTH
    assert f"{{0,{MAX_TYPE_LENGTH - 2}}}" in event["type"]["pattern"]  # trimmed length 1-128
    type_pattern = Draft202012Validator({"pattern": event["type"]["pattern"]})
    assert type_pattern.is_valid("  " + "x" * MAX_TYPE_LENGTH + "\t")
    assert not type_pattern.is_valid("x" * (MAX_TYPE_LENGTH + 1))
    assert not type_pattern.is_valid(" \u2003 ")


def test_operation_ids_are_unique(document: dict[str, Any]) -> None:
    ids = [operation["operationId"] for _, _, operation in operations(document)]
    assert len(ids) == len(set(ids))


def test_every_response_documents_x_request_id(
    document: dict[str, Any], contract: Contract
) -> None:
    for where, status, response in documented_responses(document):
        resolved, _ = contract.resolve(response, "")
        headers = resolved.get("headers", {})
        assert "X-Request-ID" in headers, f"{where} {status}"
        header, _ = contract.resolve(headers["X-Request-ID"], "")
        assert header["required"] is True


def documented_responses(document: Mapping[str, Any]) -> Iterator[tuple[str, str, Any]]:
    """(where, status, response) for every operation and every fallback of the document."""
    for template, method, operation in operations(document):
        for status, response in operation["responses"].items():
            yield f"{method.upper()} {template}", status, response
    for scenario, responses in document["x-rta-fallback-responses"].items():
        for status, response in responses.items():
            yield scenario, status, response


def test_refusals_document_their_headers(document: dict[str, Any], contract: Contract) -> None:
    wanted = {"429": "Retry-After", "503": "Retry-After", "401": "WWW-Authenticate", "405": "Allow"}
    seen = set()
    for where, status, response in documented_responses(document):
        if status in wanted and where != "GET /ready":  # not ready is no refusal to retry
            resolved, _ = contract.resolve(response, "")
            assert wanted[status] in resolved["headers"], f"{where} {status}"
            seen.add(status)
    assert seen == set(wanted)


BROWSER_ROUTES = {"/api/event"}


def test_protected_operations_document_auth_and_rate_limits(document: dict[str, Any]) -> None:
    open_routes = set()
    for template, method, operation in operations(document):
        statuses = set(operation["responses"])
        if template in BROWSER_ROUTES and method == "post":
            # Browser trackers send no key; the route is rate limited per address.
            assert operation["security"] == [], template
            assert "429" in statuses and "401" not in statuses, template
            continue
        if method == "options" or operation["security"] == []:
            assert not statuses & {"401", "429"}, f"{method} {template}"
            if method != "options":
                open_routes.add(template)
            continue
        assert {"401", "403", "429"} <= statuses, f"{method} {template}"
        schemes = {name for requirement in operation["security"] for name in requirement}
        # EventSource cannot send headers: the stream takes api_key like the ingest routes.
        query_key = template.startswith("/api/v1/events") or template == "/api/v1/stream"
        expected = (
            {"bearer", "apiKeyHeader", "apiKeyQuery"} if query_key else {"bearer", "apiKeyHeader"}
        )
        if template.startswith("/v1/"):  # Segment's SDKs send Basic auth
            expected = {"basic", "bearer", "apiKeyHeader"}
        assert schemes == expected, template
    assert open_routes == {
        "/health",
        "/ready",
        "/openapi.json",
        "/",
        "/dashboard",
        "/dashboard/assets/{file}",
        "/favicon.ico",
        "/js/rta.js",
    }


def test_every_path_documents_the_preflight(document: dict[str, Any]) -> None:
    for template, item in document["paths"].items():
        assert set(item["options"]["responses"]) == {"204", "403"}, template


# -- in step with the code -------------------------------------------------------------------


def klein_routes() -> set[tuple[str, str]]:
    """(METHOD, template) of every Klein route at the paths the default route table serves
    it at (the edge mounts the apps: ops and the dashboard at the root, the API under
    /api/v1, Plausible's /api/event under /api; the tracker's script at tracker.script_path);
    werkzeug adds HEAD."""
    table = route_table()
    routes = set()
    for name, app in (
        (OPS, OpsApp.app),
        (INGEST_APP, IngestApp.app),
        (QUERY_APP, QueryApp.app),
        (DASHBOARD, DashboardApp.app),
        (TRACKER, TrackerApp.app),
    ):
        for rule in app.url_map.iter_rules():
            templates = {r.template for r in table.of_app(name) if r.klein_rule == rule.rule}
            assert templates, f"the route table has no path for {name} {rule.rule}"
            routes.update(
                (method, template)
                for template in templates
                for method in rule.methods or ()
                if method != "HEAD"
            )
    return routes


def test_every_klein_route_is_documented_and_every_documented_route_exists(
    document: dict[str, Any],
) -> None:
    documented = {
        (method.upper(), template)
        for template, method, _ in operations(document)
        if method != "options"  # answered by the edge resource for every path
    }
    routes = klein_routes()
    assert routes - documented == set(), "routes missing from openapi.yaml"
    assert documented - routes == set(), "documented operations with no route"


CODE_ARGUMENT = {
    "BodyError": 1,
    "EventError": 2,
    "ApiError": 1,
    "error_payload": 0,
    "Refused": 0,
    "KeyRefusal": 1,
}


def codes_in_source() -> tuple[set[str], set[str]]:
    """(every error code the package can send, the functions whose code is computed at run
    time). Codes passed on from another error (``error.code``) are counted where made."""
    codes: set[str] = set()
    computed: set[str] = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        functions = {
            node.name: node
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        }
        for function in functions.values():
            for call in ast.walk(function):
                if not isinstance(call, ast.Call):
                    continue
                callee = call.func
                name = callee.id if isinstance(callee, ast.Name) else getattr(callee, "attr", "")
                position = CODE_ARGUMENT.get(name)
                if position is None or len(call.args) <= position:
                    continue
                argument = call.args[position]
                if isinstance(argument, ast.Attribute):
                    continue
                found = _constants(argument, function, functions)
                if found is None:
                    computed.add(f"{path.relative_to(PACKAGE)}:{function.name}")
                else:
                    codes |= found
    return codes, computed


def _constants(
    node: ast.expr, function: ast.AST, functions: Mapping[str, ast.AST]
) -> set[str] | None:
    """The string constants ``node`` can evaluate to, or None when they cannot be known."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.IfExp):
        body = _constants(node.body, function, functions)
        orelse = _constants(node.orelse, function, functions)
        return None if body is None or orelse is None else body | orelse
    if not isinstance(node, ast.Name):
        return None
    values: set[str] = set()
    assigned = False
    for statement in ast.walk(function):
        if not isinstance(statement, ast.Assign):
            continue
        for target in statement.targets:
            if isinstance(target, ast.Name) and target.id == node.id:
                assigned = True
                found = _constants(statement.value, function, functions)
                if found is None:
                    return None
                values |= found
            elif isinstance(target, ast.Tuple):
                names = [getattr(element, "id", None) for element in target.elts]
                if node.id in names:
                    assigned = True
                    found = _unpacked(statement.value, names.index(node.id), function, functions)
                    if found is None:
                        return None
                    values |= found
    return (values - _renamed(node.id, function)) if assigned else None


def _unpacked(
    value: ast.expr, position: int, function: ast.AST, functions: Mapping[str, ast.AST]
) -> set[str] | None:
    """Constants at ``position`` of the tuples a local function returns into ``value``."""
    source: ast.AST | None = None
    if isinstance(value, ast.Name):  # found = helper(...); code, ... = found
        for statement in ast.walk(function):
            if (
                isinstance(statement, ast.Assign)
                and isinstance(statement.value, ast.Call)
                and any(getattr(t, "id", None) == value.id for t in statement.targets)
            ):
                source = functions.get(getattr(statement.value.func, "id", ""))
    elif isinstance(value, ast.Call):
        source = functions.get(getattr(value.func, "id", ""))
    if source is None:
        return None
    values: set[str] = set()
    for statement in ast.walk(source):
        if isinstance(statement, ast.Return) and isinstance(statement.value, ast.Tuple):
            element = statement.value.elts[position]
            if not (isinstance(element, ast.Constant) and isinstance(element.value, str)):
                return None
            values.add(element.value)
    return values


def _renamed(name: str, function: ast.AST) -> set[str]:
    """Values of ``name`` replaced in an ``if name == "value": ... name = ...`` branch."""
    renamed = set()
    for statement in ast.walk(function):
        if not isinstance(statement, ast.If):
            continue
        test = statement.test
        if (
            isinstance(test, ast.Compare)
            and isinstance(test.left, ast.Name)
            and test.left.id == name
            and isinstance(test.ops[0], ast.Eq)
            and isinstance(test.comparators[0], ast.Constant)
        ):
            reassigned = any(
                isinstance(inner, ast.Assign)
                and any(getattr(target, "id", None) == name for target in inner.targets)
                for inner in statement.body
            )
            if reassigned:
                renamed.add(test.comparators[0].value)
    return renamed


def documented_codes(document: dict[str, Any], contract: Contract) -> set[str]:
    """Every value that a ``code`` member of a schema is allowed to take by const or enum."""
    codes: set[str] = set()

    def values(schema: Any) -> set[str]:
        schema, _ = contract.resolve(schema, "")
        found = set(schema.get("enum", ()))
        if "const" in schema:
            found.add(schema["const"])
        for key in ("anyOf", "oneOf", "allOf"):
            for branch in schema.get(key, ()):
                found |= values(branch)
        return found

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            properties = node.get("properties")
            if isinstance(properties, dict) and isinstance(properties.get("code"), dict):
                codes.update(values(properties["code"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    return codes


def test_the_source_scan_finds_the_codes_it_should() -> None:
    codes, computed = codes_in_source()
    # One of each way a code is written: a constant, a conditional, a name assigned in the
    # function, a tuple returned by a helper, and a renamed marker that must not count.
    assert {
        "queue_full",
        "empty_field",
        "too_many_properties",
        "invalid_number",
        "origin_not_allowed",
    } <= codes
    assert "key_too_long" not in codes
    # werkzeug's other routing errors are named at run time; every other code is static.
    assert computed == {"web/errors.py:_routing_http_error"}


def test_every_error_code_in_the_source_is_documented_and_vice_versa(
    document: dict[str, Any], contract: Contract
) -> None:
    in_source, _ = codes_in_source()
    documented = documented_codes(document, contract)
    assert in_source - documented == set(), "codes the daemon sends but openapi.yaml lacks"
    assert documented - in_source == set(), "codes openapi.yaml lists but nothing sends"


# -- the contract checker --------------------------------------------------------------------


def test_paths_match_their_templates(contract: Contract) -> None:
    assert contract.match("/api/v1/metrics/page_views%3A%2Fhome/series?from=-1h") == (
        "/api/v1/metrics/{name}/series",
        {"name": "page_views:/home"},
    )
    assert contract.match("/api/v1/metrics/page_views:/a/b:c") == (
        "/api/v1/metrics/{name}",
        {"name": "page_views:/a/b:c"},
    )
    assert contract.match("/api/v1/metrics") == ("/api/v1/metrics", {})
    assert contract.match("/metrics") == ("/metrics", {})
    assert contract.match("/api/v1/breakdown/clicks?limit=3") == (
        "/api/v1/breakdown/{base}",
        {"base": "clicks"},
    )
    assert contract.match("/api/v1/breakdown/a/b") is None
    assert contract.match("/nope") is None


def test_conforming_responses_pass(contract: Contract) -> None:
    counter = {
        "name": "clicks",
        "type": "counter",
        "value": 3,
        "count": 3,
        "timestamp": "2026-11-27T03:00:00.000Z",
    }
    body = {"status": "success", "data": counter, "message": "metric 'clicks' found"}
    contract.check("GET", "/api/v1/metrics/clicks", 200, JSON, json.dumps(body).encode())
    contract.check(
        "GET",
        "/api/v1/events",
        405,
        {**JSON, "allow": "POST"},
        error("method_not_allowed", allowed=["POST"]),
    )
    contract.check("HEAD", "/api/v1/stats", 200, JSON, b"")
    contract.check(
        "OPTIONS", "/anything", 204, {"x-request-id": "r", "allow": "GET, POST, OPTIONS"}, b""
    )
    contract.check(
        "GET",
        "/metrics",
        200,
        {"content-type": "text/plain; version=0.0.4; charset=utf-8", "x-request-id": "r"},
        b"# HELP x\n",
    )


def rejected(
    contract: Contract, method: str, path: str, status: int, headers: Mapping[str, str], body: bytes
) -> str:
    with pytest.raises(AssertionError) as caught:
        contract.check(method, path, status, headers, body)
    return str(caught.value)


def test_wrong_bodies_are_rejected(contract: Contract) -> None:
    stats = {"status": "success", "message": "aggregator statistics", "data": {"total_events": 1}}
    message = rejected(contract, "GET", "/api/v1/stats", 200, JSON, json.dumps(stats).encode())
    assert "/api/v1/stats" in message and "required property" in message

    counter = {
        "name": "clicks",
        "type": "counter",
        "value": 3,
        "count": 3,
        "timestamp": "2026-11-27T03:00:00.000Z",
        "p50": 1.0,
    }
    body = json.dumps({"status": "success", "data": counter, "message": "m"}).encode()
    rejected(contract, "GET", "/api/v1/metrics/clicks", 200, JSON, body)

    histogram = {**counter, "type": "histogram"}  # the other histogram fields are missing
    body = json.dumps({"status": "success", "data": histogram, "message": "m"}).encode()
    rejected(contract, "GET", "/api/v1/metrics/revenue_histogram", 200, JSON, body)

    accepted = {
        "status": "accepted",
        "message": "event queued for processing",
        "data": {"event_id": "e1", "type": "click", "extra": 1},
    }
    rejected(contract, "POST", "/api/v1/events", 202, JSON, json.dumps(accepted).encode())

    message = rejected(contract, "POST", "/api/v1/events", 400, JSON, error("no_such_code"))
    assert "no_such_code" in message
    rejected(contract, "POST", "/api/v1/events", 400, JSON, error("missing_field"))  # no field
    rejected(
        contract,
        "GET",
        "/api/v1/metrics/x?to=now",
        400,
        JSON,
        error("invalid_parameter", parameter="resolution"),
    )
    rejected(contract, "GET", "/health", 200, JSON, b"not json")


def test_readiness_status_must_agree_with_the_checks(contract: Contract) -> None:
    names = ("shutdown", "listening", "workers", "queue", "load", "flush", "store", "journal")

    def ready(status: str, failing: str | None) -> bytes:
        checks = {
            name: {"status": "failing" if name == failing else "ok", "detail": "d"}
            for name in names
        }
        return json.dumps(
            {"status": status, "checks": checks, "time": "2026-11-27T03:00:00.000Z"}
        ).encode()

    contract.check("GET", "/ready", 200, JSON, ready("ready", None))
    contract.check("GET", "/ready", 503, JSON, ready("not_ready", "store"))
    rejected(contract, "GET", "/ready", 200, JSON, ready("ready", "store"))
    rejected(contract, "GET", "/ready", 503, JSON, ready("not_ready", None))


def test_range_completeness_needs_a_note(contract: Contract) -> None:
    data = {
        "name": "x",
        "from": "2026-11-27T02:00:00.000Z",
        "to": "2026-11-27T03:01:00.000Z",
        "resolution_seconds": 60,
        "complete": False,
        "points": [],
    }
    body = {"status": "success", "data": data, "message": "0 points of 'x'"}
    rejected(contract, "GET", "/api/v1/metrics/x/series", 200, JSON, json.dumps(body).encode())
    data["note"] = "the range starts before the retention"
    contract.check("GET", "/api/v1/metrics/x/series", 200, JSON, json.dumps(body).encode())


def test_statuses_headers_and_content_types_are_checked(contract: Contract) -> None:
    message = rejected(contract, "GET", "/api/v1/stats", 418, JSON, error("teapot"))
    assert "status 418 is not documented" in message
    message = rejected(
        contract, "GET", "/api/v1/events", 405, JSON, error("method_not_allowed", allowed=["POST"])
    )
    assert "header Allow" in message
    message = rejected(contract, "GET", "/api/v1/stats", 401, JSON, error("unauthorized"))
    assert "WWW-Authenticate" in message
    rejected(contract, "POST", "/api/v1/events", 429, JSON, error("rate_limited"))  # Retry-After
    rejected(
        contract,
        "GET",
        "/health",
        200,
        {"content-type": "application/json"},
        b'{"status":"healthy","time":"2026-11-27T03:00:00.000Z"}',
    )  # no X-Request-ID
    rejected(
        contract,
        "GET",
        "/health",
        200,
        {**JSON, "x-request-id": "bad id"},
        b'{"status":"healthy","time":"2026-11-27T03:00:00.000Z"}',
    )
    message = rejected(
        contract, "GET", "/metrics", 200, {**JSON, "content-type": "application/json"}, b"{}"
    )
    assert "content type" in message
    message = rejected(
        contract,
        "OPTIONS",
        "/api/v1/stats",
        204,
        {"x-request-id": "r", "allow": "GET, POST, OPTIONS"},
        b"x",
    )
    assert "no body is documented" in message
    rejected(contract, "GET", "/nope", 405, {**JSON, "allow": "GET"}, error("method_not_allowed"))


# -- what the daemon really answers ----------------------------------------------------------


def test_real_responses_conform() -> None:
    daemon = make_daemon()
    seen: set[tuple[str, int]] = set()

    def call(
        method: str,
        path: str,
        expected: int,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        reply = daemon.http.request(method, path, body, headers={**REQUEST_ID, **(headers or {})})
        assert reply.status == expected, (method, path, reply.status, reply.body[:300])
        check(method, path, reply.status, reply.headers, reply.body)
        seen.add((method, reply.status))
        return reply

    call(
        "POST",
        "/api/v1/events",
        202,
        {"type": "purchase", "user_id": "u1", "properties": {"amount": 19.5}},
    )
    call("POST", "/api/v1/events", 202, {"type": " click ", "id": "evt-1", "user_id": None})
    call("POST", "/api/v1/events", 400, {"type": "x", "properties": {"a": "x" * 5000}})
    call("POST", "/api/v1/events", 400, b'{"type": "x"} trailing')
    call("POST", "/api/v1/events", 400, b"")
    call("POST", "/api/v1/events", 413, {"type": "x", "properties": {"a": "x" * 70_000}})
    call(
        "POST",
        "/api/v1/events/batch",
        202,
        {
            "events": [
                {
                    "type": "pageview",
                    "user_id": "u2",
                    "timestamp": (MINUTE - 60) * 1000,
                    "properties": {"page": "/a/b:c"},
                },
                {
                    "type": "pageview",
                    "timestamp": "2026-11-27T02:59:30Z",
                    "properties": {"page": "/"},
                },
                {"user_id": "no type"},
                "not an object",
            ]
        },
    )
    call("POST", "/api/v1/events/batch", 400, [{"type": ""}, {"timestamp": "yesterday"}])
    call("POST", "/api/v1/events/batch", 400, [])
    call("POST", "/api/v1/events/batch", 413, [{"type": "x"}] * 1001)
    for _ in range(50):
        daemon.reactor.advance(0)
    daemon.reactor.advance(10.0)  # the earlier minute closes and is written

    assert call("GET", "/api/v1/metrics", 200).json["data"]
    call("GET", "/api/v1/metrics?prefix=nothing", 200)
    histogram = call("GET", "/api/v1/metrics/revenue_histogram", 200).json["data"]
    assert histogram["p99"] == 19.5
    call("GET", "/api/v1/metrics/revenue_histogram?from=-1d&to=-12h", 200)  # empty histogram
    call("GET", "/api/v1/metrics/page_views%3A%2Fa%2Fb%3Ac?from=-1h", 200)
    call("GET", "/api/v1/metrics/unique_users?from=-3y", 200)  # beyond retention: a note
    call("GET", "/api/v1/metrics/nothing", 404)
    call("GET", "/api/v1/metrics/total_events?from=soon", 400)
    call("GET", "/api/v1/metrics/page_views:/a/b:c/series?resolution=1m", 200)
    call("GET", "/api/v1/metrics/total_events/series?from=-30d&resolution=1m", 400)
    call("GET", "/api/v1/breakdown/page_views?limit=1", 200)
    call("GET", "/api/v1/breakdown/page_views?from=-1h", 200)
    call("GET", "/api/v1/breakdown/page_views?limit=0", 400)
    call("GET", "/api/v1/breakdown/a%20b", 400)
    call("GET", "/api/v1/breakdown/nothing", 404)  # an unknown family, like a metric
    call("GET", "/api/v1/breakdown/clicks?from=-1h", 200)  # declared: empty, not 404
    call("GET", "/favicon.ico", 200)
    call("GET", "/api/v1/stats", 200)
    windows = call("GET", "/api/v1/windows", 200).json["data"]["windows"]
    assert {window["closed"] for window in windows} == {True, False}
    call("GET", "/health", 200)
    call("GET", "/ready", 200)
    call("GET", "/metrics", 200)
    call("GET", "/metrics", 200, headers={"Accept": "application/openmetrics-text"})
    call("GET", "/nope", 404)
    call("GET", "/api/v1/events", 405)
    call("POST", "/api/v1/stats", 405, {})
    call("DELETE", "/health", 405)
    call("OPTIONS", "/api/v1/events", 204, headers={"Origin": "https://shop.example"})
    call("OPTIONS", "/api/v1/stats", 204)
    call("OPTIONS", "/not/routed", 204)
    assert {status for _, status in seen} == {200, 202, 204, 400, 404, 405, 413}


def test_real_refusals_conform() -> None:
    # Not started: no worker takes from the queue, so the second request finds it full.
    daemon = make_daemon(
        {"processing": {"buffer_size": 2}, "limits": {"max_batch_events": 2}}, start=False
    )
    assert daemon.http.post("/api/v1/events", {"type": "a"}).status == 202
    full = daemon.http.post("/api/v1/events/batch", [{"type": "a"}, {"type": "b"}])
    check("POST", "/api/v1/events/batch", full.status, full.headers, full.body)
    assert (full.status, full.json["code"]) == (503, "queue_full")
    daemon.service.queue.close()
    closing = daemon.http.post("/api/v1/events", {"type": "a"})
    check("POST", "/api/v1/events", closing.status, closing.headers, closing.body)
    assert (closing.status, closing.json["code"]) == (503, "shutting_down")


def test_body_refused_before_reading_conforms() -> None:
    daemon = make_daemon({"limits": {"max_body_bytes": 1024}})
    site = daemon.service.listeners[0].factory
    written, closed = raw_http(
        site, b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n"
    )
    head, _, body = written.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    status = int(status_line.split()[1])
    check("POST", "/api/v1/events", status, headers, body)
    assert (status, json.loads(body)["limit"], closed) == (413, 1024, True)


def test_openapi_json_serves_this_document(document: dict[str, Any]) -> None:
    daemon = make_daemon()
    reply = daemon.http.get("/openapi.json")
    check("GET", "/openapi.json", reply.status, reply.headers, reply.body)
    assert reply.status == 200
    assert reply.json == json.loads(json.dumps(document))
