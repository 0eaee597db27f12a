"""The HTTP contract (twisted_rta/web/openapi.yaml) as a test oracle for real responses.

``check(method, path, status, headers, body)`` finds the documented operation and response
for a request and raises AssertionError, saying what differs, when the response does not
conform: an undocumented status, a missing documented header, a header or JSON body that
breaks its schema, an undocumented content type, or a body where none is documented.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from importlib import resources
from typing import Any
from urllib.parse import unquote

import attrs
import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_PACKAGE = "twisted_rta.web"
SPEC_FILE = "openapi.yaml"
DOCUMENT_URI = "urn:twisted-rta:openapi"
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
FALLBACKS = "x-rta-fallback-responses"

HeaderValues = str | Sequence[str]


def load_document() -> dict[str, Any]:
    """The OpenAPI document as shipped inside the package."""
    text = resources.files(SPEC_PACKAGE).joinpath(SPEC_FILE).read_text(encoding="utf-8")
    document = yaml.safe_load(text)
    assert isinstance(document, dict), f"{SPEC_FILE} does not hold a mapping"
    return document


def escape_pointer(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


@attrs.frozen
class Route:
    """One path template of the document and the regex that matches decoded request paths."""

    template: str
    pattern: re.Pattern[str]
    literal_length: int  # the more literal text a template has, the more specific it is


@attrs.frozen
class Expectation:
    """What the document says about one request: the responses that may answer it."""

    label: str  # e.g. "GET /api/v1/metrics/{name}" or "unmatched-path"
    responses: Mapping[str, Any]
    pointer: str  # JSON pointer of ``responses`` in the document
    has_body: bool  # False for HEAD


class Contract:
    """Finds the documented response for a request and validates a real response with it."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self.document = document
        self._registry: Registry[Any] = Registry().with_resource(
            DOCUMENT_URI, Resource(contents=document, specification=DRAFT202012)
        )
        self._validators: dict[str, Draft202012Validator] = {}
        self.routes = sorted(
            (self._route(template) for template in document["paths"]),
            key=lambda route: -route.literal_length,
        )

    @classmethod
    def load(cls) -> Contract:
        return cls(load_document())

    # -- public ------------------------------------------------------------------------------

    def match(self, path: str) -> tuple[str, dict[str, str]] | None:
        """The template matching a request path (query ignored, percent-decoded) and the
        values of its parameters; ``/series`` and other literal suffixes win."""
        decoded = unquote(path.split("?", 1)[0])
        for route in self.routes:
            found = route.pattern.fullmatch(decoded)
            if found is not None:
                return route.template, found.groupdict()
        return None

    def expectation(self, method: str, path: str) -> Expectation:
        method = method.lower()
        matched = self.match(path)
        if matched is None:
            scenario = "options" if method == "options" else "unmatched-path"
            return self._fallback(scenario, has_body=method != "head")
        template, _ = matched
        item = self.document["paths"][template]
        item_pointer = "/paths/" + escape_pointer(template)
        operation_method = method
        if method not in item and method == "head" and "get" in item:
            operation_method = "get"  # werkzeug answers HEAD wherever GET is routed
        if operation_method not in item:
            return self._fallback("unsupported-method", has_body=method != "head")
        return Expectation(
            label=f"{method.upper()} {template}",
            responses=item[operation_method]["responses"],
            pointer=f"{item_pointer}/{operation_method}/responses",
            has_body=method != "head",
        )

    def check(
        self,
        method: str,
        path: str,
        status: int,
        headers: Mapping[str, HeaderValues],
        body: bytes,
    ) -> None:
        """Raise AssertionError unless the response conforms to the document."""
        expectation = self.expectation(method, path)
        where = f"{method.upper()} {path} -> {status} (documented as {expectation.label})"
        response, pointer = self._response_for(expectation, status, where)
        found = _normalise_headers(headers)
        problems = [*self._header_problems(response, pointer, found)]
        if expectation.has_body:
            problems.extend(self._body_problems(response, pointer, found, body))
        if problems:
            raise AssertionError(f"{where} breaks the contract:\n  " + "\n  ".join(problems))

    def validator(self, pointer: str) -> Draft202012Validator:
        """A Draft 2020-12 validator for the schema at ``pointer`` in the document; its
        ``$ref``s resolve against the whole document."""
        validator = self._validators.get(pointer)
        if validator is None:
            schema = {"$ref": f"{DOCUMENT_URI}#{pointer}"}
            validator = Draft202012Validator(
                schema,
                registry=self._registry,
                format_checker=Draft202012Validator.FORMAT_CHECKER,
            )
            self._validators[pointer] = validator
        return validator

    def resolve(self, node: Any, pointer: str) -> tuple[Any, str]:
        """Follow ``$ref`` (local references only) from ``node`` found at ``pointer``."""
        seen: set[str] = set()
        while isinstance(node, Mapping) and "$ref" in node:
            reference = node["$ref"]
            assert isinstance(reference, str) and reference.startswith("#/"), (
                f"only local references are supported, got {reference!r} at {pointer}"
            )
            assert reference not in seen, f"reference cycle through {reference}"
            seen.add(reference)
            pointer = reference[1:]
            node = self.at(pointer)
        return node, pointer

    def at(self, pointer: str) -> Any:
        node: Any = self.document
        for raw in pointer.split("/")[1:]:
            token = raw.replace("~1", "/").replace("~0", "~")
            node = node[int(token)] if isinstance(node, list) else node[token]
        return node

    # -- matching ----------------------------------------------------------------------------

    def _route(self, template: str) -> Route:
        parts: list[str] = []
        literal = 0
        for piece in re.split(r"(\{[^}]+\})", template):
            if piece.startswith("{") and piece.endswith("}"):
                name = piece[1:-1]
                spans = self._parameter_accepts(template, name, "a/b")
                parts.append(f"(?P<{name}>{'.+' if spans else '[^/]+'})")
            else:
                parts.append(re.escape(piece))
                literal += len(piece)
        return Route(template, re.compile("".join(parts), re.DOTALL), literal)

    def _parameter_accepts(self, template: str, name: str, value: str) -> bool:
        """Whether every declaration of the path parameter ``name`` of ``template`` (on the
        path item and on each operation) takes ``value``; a value with a slash tells whether
        the parameter may span several path segments."""
        item = self.document["paths"][template]
        base = "/paths/" + escape_pointer(template)
        candidates: list[tuple[Any, str]] = [
            (parameter, f"{base}/parameters/{index}")
            for index, parameter in enumerate(item.get("parameters", []))
        ]
        for method in HTTP_METHODS:
            for index, parameter in enumerate(item.get(method, {}).get("parameters", [])):
                candidates.append((parameter, f"{base}/{method}/parameters/{index}"))
        declared = False
        for parameter, pointer in candidates:
            resolved, resolved_pointer = self.resolve(parameter, pointer)
            if resolved.get("in") == "path" and resolved.get("name") == name:
                declared = True
                schema_pointer = resolved_pointer + "/schema"
                if "schema" in resolved and not self.validator(schema_pointer).is_valid(value):
                    return False
        assert declared, f"path parameter {name!r} of {template} is not declared"
        return True

    def _fallback(self, scenario: str, *, has_body: bool) -> Expectation:
        responses = self.document.get(FALLBACKS, {}).get(scenario)
        assert responses is not None, f"the document has no {FALLBACKS}.{scenario}"
        return Expectation(scenario, responses, f"/{FALLBACKS}/{scenario}", has_body)

    def _response_for(self, expectation: Expectation, status: int, where: str) -> tuple[Any, str]:
        responses = expectation.responses
        for key in (str(status), f"{str(status)[0]}XX", "default"):
            if key in responses:
                return self.resolve(responses[key], f"{expectation.pointer}/{key}")
        documented = ", ".join(sorted(responses))
        raise AssertionError(
            f"{where}: status {status} is not documented (documented: {documented})"
        )

    # -- validation --------------------------------------------------------------------------

    def _header_problems(
        self, response: Mapping[str, Any], pointer: str, found: Mapping[str, list[str]]
    ) -> Iterable[str]:
        for name, header in response.get("headers", {}).items():
            header, header_pointer = self.resolve(
                header, f"{pointer}/headers/" + escape_pointer(name)
            )
            values = found.get(name.lower())
            if not values:
                if header.get("required", False):
                    yield f"header {name} is documented as required but missing"
                continue
            if "schema" in header:
                value = ", ".join(values)
                error = best_match(self.validator(header_pointer + "/schema").iter_errors(value))
                if error is not None:
                    yield f"header {name}: {value!r} breaks its schema: {error.message}"

    def _body_problems(
        self,
        response: Mapping[str, Any],
        pointer: str,
        found: Mapping[str, list[str]],
        body: bytes,
    ) -> Iterable[str]:
        content: Mapping[str, Any] = response.get("content", {})
        if not content:
            if body:
                yield f"no body is documented, got {len(body)} bytes: {body[:120]!r}"
            return
        content_type = (found.get("content-type") or [""])[0]
        media_type = content_type.split(";", 1)[0].strip().lower()
        key = _media_key(media_type, content)
        if key is None:
            yield (
                f"content type {content_type!r} is not documented (documented: "
                f"{', '.join(content)})"
            )
            return
        media = content[key]
        if "schema" not in media:
            return
        schema_pointer = f"{pointer}/content/{escape_pointer(key)}/schema"
        if media_type == "application/json" or media_type.endswith("+json"):
            try:
                instance = json.loads(body)
            except ValueError as error:
                yield f"the body is not JSON ({error}): {body[:120]!r}"
                return
        else:
            try:
                instance = body.decode("utf-8")
            except UnicodeDecodeError:
                yield f"the {media_type} body is not UTF-8"
                return
        if media_type == "text/event-stream":
            # The schema describes one event; validate each one the body holds.
            for event in _sse_events(instance):
                yield from self._schema_problems(schema_pointer, event)
            return
        yield from self._schema_problems(schema_pointer, instance)

    def _schema_problems(self, schema_pointer: str, instance: Any) -> Iterator[str]:
        errors = sorted(
            self.validator(schema_pointer).iter_errors(instance),
            key=lambda error: list(error.absolute_path),
        )
        if errors:
            error = best_match(errors)
            location = "/".join(str(part) for part in error.absolute_path) or "(root)"
            shown = json.dumps(instance)[:600] if not isinstance(instance, str) else instance[:200]
            yield (
                f"the body breaks {schema_pointer} at {location}: {error.message}\n  body: {shown}"
            )


def _normalise_headers(headers: Mapping[str, HeaderValues]) -> dict[str, list[str]]:
    normalised: dict[str, list[str]] = {}
    for name, value in headers.items():
        values = [value] if isinstance(value, str) else list(value)
        normalised.setdefault(name.lower(), []).extend(values)
    return normalised


def _media_key(media_type: str, content: Mapping[str, Any]) -> str | None:
    for key in content:
        if key.lower() == media_type:
            return key
    major = media_type.split("/", 1)[0]
    for key in (f"{major}/*", "*/*"):
        if key in content:
            return key
    return None


@functools.cache
def contract() -> Contract:
    """The shipped document, loaded once per test session."""
    return Contract.load()


def check(
    method: str, path: str, status: int, headers: Mapping[str, HeaderValues], body: bytes
) -> None:
    """``Contract.check`` against the shipped document."""
    contract().check(method, path, status, headers, body)


def _sse_events(text: str) -> list[dict[str, Any]]:
    """Parse a text/event-stream body into events ({data, event, id, retry}), skipping a block
    that only sets ``retry`` (it carries no event)."""
    events: list[dict[str, Any]] = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        event: dict[str, Any] = {}
        data: list[str] = []
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            elif name == "retry" and value.isdigit():
                event["retry"] = int(value)
            elif name in ("event", "id"):
                event[name] = value
        if data:
            event["data"] = "\n".join(data)
            event.setdefault("event", "message")
            events.append(event)
    return events
