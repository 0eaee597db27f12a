"""The route table: every path the daemon answers, once, with the policy the edge applies.

The edge derives everything it does before a handler runs from the ``Route`` a path matches:
the API key scope, the CORS policy family, the request rate limit, the methods a preflight
announces, the label of the access log and HTTP metrics, and which Klein app gets the request
(one Klein dispatch per request: the edge mounts the apps itself). A test checks that the
table and the Klein apps' url maps list the same routes, both ways.

The table is built from the config (``route_table``): the tracker's script and endpoint paths
are renameable (ad-blockers match the well-known names); everything else is fixed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from attrs import Factory, field, frozen

from twisted_rta.config.schema import TrackerConfig
from twisted_rta.web.auth import INGEST, READ

# Which Klein app serves a route (EdgeResource is given one resource per name).
OPS, INGEST_APP, QUERY_APP, DASHBOARD = "ops", "ingest", "queries", "dashboard"
TRACKER = "tracker"
# CORS families: the ingest routes follow cors.ingest, every other route cors.query.
INGEST_CORS, QUERY_CORS = "ingest", "query"
API_MOUNT = "/api/v1"
OTHER_LABEL = "other"
PLAUSIBLE_PATH = "/api/event"  # Plausible's Events API: always served, whatever the config
PLAUSIBLE_RULE = "/event"  # the ingest app's rule for it (below the /api mount)
SEGMENT_MOUNT = "/v1"  # Segment's HTTP Tracking API, at the paths its SDKs post to
SEGMENT_CALLS = ("track", "page", "screen", "identify", "group", "alias", "batch", "import")
SEGMENT_BATCH_ALIASES = ("b",)  # Segment's other name of /v1/batch
# The one-letter paths analytics.js (analytics-next) posts each call to by default.
SEGMENT_CALL_ALIASES = {
    "t": "track",
    "p": "page",
    "s": "screen",
    "i": "identify",
    "g": "group",
    "a": "alias",
}
# PostHog's capture API, at the paths its SDKs post to (with the trailing slash they add or
# without), every one served by the ingest app's one PostHog rule.
POSTHOG_PATHS = ("/capture", "/batch", "/e", "/i/v0/e")
POSTHOG_RULE = "/posthog"
SCRIPT_RULE = "/rta.js"  # the tracker app's one rule: tracker.script_path is served by it


@frozen
class Route:
    """One path template and what the edge does for it.

    ``template`` is the full path as the OpenAPI document writes it (``{name}`` parameters).
    A parameter matches one path segment unless ``spans_segments`` (then it may hold ``/``,
    like a metric name). ``mount`` is the prefix the edge strips before handing the request
    to ``app``, whose Klein rule is the rest of the template, unless ``rule`` names it: a
    path taken from the config, served by the rule of the route it stands for (the edge
    hands the app that rule's path). ``app`` None: the edge answers itself (the fallback's
    404).
    """

    template: str
    methods: tuple[str, ...]
    app: str | None
    scope: str | None  # the key scope needed (auth.INGEST or auth.READ); None: no key
    cors: str = QUERY_CORS
    rate_limit: str | None = READ  # the request bucket (ratelimit.RequestLimiters); None: none
    public_option: bool = False  # no key needed when auth.public_metrics is true
    key_in_query: bool = False  # may take the key as ?api_key= (browser beacons, EventSource)
    key_in_body: bool = False  # without a header key, the handler checks the body's (Segment)
    per_site: bool = False  # takes ?site=: the only reads a key bound to sites may make
    spans_segments: bool = False
    mount: str = ""
    rule: str | None = None  # the app's Klein rule, when not the template below the mount
    label: str = field(  # of the access log and the HTTP metrics: a bounded set
        default=Factory(lambda self: self.template, takes_self=True)
    )
    # Derived once: what the hot path reads.
    allow: bytes = field(init=False)  # the Allow header of a preflight
    literal: bool = field(init=False)

    def __attrs_post_init__(self) -> None:
        methods = [*self.methods]
        if "GET" in methods and "HEAD" not in methods:
            methods.append("HEAD")  # werkzeug answers HEAD wherever GET is routed
        object.__setattr__(self, "allow", ", ".join([*methods, "OPTIONS"]).encode("ascii"))
        object.__setattr__(self, "literal", "{" not in self.template)
        if self.rule is not None and not (self.literal and self.rule.startswith("/")):
            raise ValueError(f"{self.template}: only a literal path may name its app's rule")
        if not self.template.startswith(self.mount + "/"):
            raise ValueError(f"{self.template} is not under its mount {self.mount!r}")

    @property
    def open(self) -> bool:
        """Never needs a key and is never rate limited."""
        return self.scope is None and self.rate_limit is None

    @property
    def dashboard(self) -> bool:
        return self.app == DASHBOARD

    @property
    def klein_rule(self) -> str:
        """The rule of ``app`` that serves this route (werkzeug syntax, mount removed)."""
        if self.rule is not None:
            return self.rule
        rule = self.template[len(self.mount) :]
        converter = "<path:" if self.spans_segments else "<"
        return rule.replace("{", converter).replace("}", ">")


@frozen
class _Pattern:
    """A templated route as a prefix and a suffix around its one parameter."""

    prefix: bytes
    suffix: bytes
    spans_segments: bool
    route: Route

    @classmethod
    def of(cls, route: Route) -> _Pattern:
        before, _, rest = route.template.partition("{")
        _, _, after = rest.partition("}")
        if "{" in after:
            raise ValueError(f"{route.template}: one path parameter per route")
        return cls(before.encode(), after.encode(), route.spans_segments, route)

    def matches(self, path: bytes) -> bool:
        if not (path.startswith(self.prefix) and path.endswith(self.suffix)):
            return False
        value = path[len(self.prefix) : len(path) - len(self.suffix)]
        return bool(value) and (self.spans_segments or b"/" not in value)


class RouteTable:
    """Routes by path: literal paths in a dict (the ingest routes are found with one lookup),
    templated ones tried after it, the most literal first (``/metrics/{name}/series`` before
    ``/metrics/{name}``). A path no route takes gets ``fallback``."""

    def __init__(self, routes: Iterable[Route], fallback: Route) -> None:
        self.routes = tuple(routes)
        self.fallback = fallback
        self._exact: dict[bytes, Route] = {}
        patterns: list[_Pattern] = []
        for route in self.routes:
            if route.literal:
                key = route.template.encode()
                if key in self._exact:
                    raise ValueError(f"{route.template} is in the route table twice")
                self._exact[key] = route
            else:
                patterns.append(_Pattern.of(route))
        self._patterns = tuple(
            sorted(patterns, key=lambda pattern: -len(pattern.prefix + pattern.suffix))
        )

    def match(self, path: bytes) -> Route:
        """The route of a request path (without the query), else ``fallback``."""
        route = self._exact.get(path)
        if route is not None:
            return route
        for pattern in self._patterns:
            if pattern.matches(path):
                return pattern.route
        return self.fallback

    def apps(self) -> frozenset[str]:
        """The names of the apps the routes are served by."""
        return frozenset(route.app for route in self.routes if route.app is not None)

    def of_app(self, app: str) -> tuple[Route, ...]:
        return tuple(route for route in self.routes if route.app == app)


def _ops(template: str, *, scope: str | None, rate_limit: str | None) -> Route:
    return Route(template, ("GET",), OPS, scope, rate_limit=rate_limit)


def _browser(template: str, *, rule: str | None = None) -> Route:
    # Browser trackers (Plausible's, ours) send no key: no scope; rate limited per address.
    return Route(
        template,
        ("POST",),
        INGEST_APP,
        None,
        cors=INGEST_CORS,
        rate_limit=INGEST,
        mount="" if rule else "/api",
        rule=rule,
    )


def _query(template: str, *, spans_segments: bool = False, per_site: bool = True) -> Route:
    return Route(
        template,
        ("GET",),
        QUERY_APP,
        READ,
        spans_segments=spans_segments,
        mount=API_MOUNT,
        per_site=per_site,
    )


def _ingest(template: str) -> Route:
    return Route(
        template,
        ("POST",),
        INGEST_APP,
        INGEST,
        cors=INGEST_CORS,
        rate_limit=INGEST,
        key_in_query=True,  # browser beacons (sendBeacon) cannot set headers
        mount=API_MOUNT,
    )


def _sdk(template: str, *, rule: str | None, mount: str = "", label: str | None = None) -> Route:
    # The SDKs' routes: Segment's send the write key as Basic auth (server SDKs) or as
    # writeKey in the body (analytics.js), PostHog's the project key in the body (api_key,
    # token): a request without a header key is let through for the handler to check.
    return Route(
        template,
        ("POST",),
        INGEST_APP,
        INGEST,
        cors=INGEST_CORS,
        rate_limit=INGEST,
        key_in_body=True,
        mount=mount,
        rule=rule,
        label=label or template,
    )


def _segment(call: str, *, rule: str | None = None) -> Route:
    return _sdk(f"{SEGMENT_MOUNT}/{call}", rule=rule, mount=SEGMENT_MOUNT)


def _posthog(path: str) -> Route:
    # Every path is served by one rule, and both spellings share one label.
    return _sdk(path, rule=POSTHOG_RULE, label=path.rstrip("/"))


def _page(template: str) -> Route:
    # The page, its assets and its icon hold no data: no key, no rate limit.
    return Route(template, ("GET",), DASHBOARD, None, rate_limit=None)


#: A path no route takes. It still needs the read scope (and counts against the read bucket)
#: before it is answered 404: with keys configured, an anonymous caller learns nothing about
#: which paths exist (an unknown path and a protected one both answer 401). Open routes are
#: few and documented; everything else is private until a key says otherwise. The edge
#: answers the 404 itself (``app`` None): no Klein dispatch for junk.
UNKNOWN = Route("/{path}", ("GET",), None, READ, spans_segments=True, label=OTHER_LABEL)

#: Every route whose path the config cannot change.
FIXED_ROUTES = (
    _ops("/health", scope=None, rate_limit=None),
    _ops("/ready", scope=None, rate_limit=None),
    _ops("/openapi.json", scope=None, rate_limit=None),
    Route("/metrics", ("GET",), OPS, READ, public_option=True),  # Prometheus
    _ingest("/api/v1/events"),
    _ingest("/api/v1/events/batch"),
    _browser(PLAUSIBLE_PATH),  # Plausible's Events API
    *(_segment(call) for call in SEGMENT_CALLS),
    *(_segment(alias, rule="/batch") for alias in SEGMENT_BATCH_ALIASES),
    *(_segment(alias, rule=f"/{call}") for alias, call in SEGMENT_CALL_ALIASES.items()),
    *(_posthog(path + slash) for path in POSTHOG_PATHS for slash in ("", "/")),
    _query("/api/v1/metrics"),
    _query("/api/v1/metrics/{name}", spans_segments=True),
    _query("/api/v1/metrics/{name}/series", spans_segments=True),
    _query("/api/v1/breakdown/{base}"),
    _query("/api/v1/web"),  # the web analytics summary of a site
    _query("/api/v1/stats", per_site=False),  # the node's figures, of every site
    _query("/api/v1/windows", per_site=False),
    _query("/api/v1/windows/sliding", per_site=False),  # a sliding window's figures over a range
    _page("/"),
    _page("/dashboard"),
    _page("/dashboard/assets/{file}"),
    _page("/favicon.ico"),
    # The stream carries data: the read scope, and since EventSource cannot send
    # headers the key may come as ?api_key=.
    Route("/api/v1/stream", ("GET",), DASHBOARD, READ, key_in_query=True),
)


def tracker_routes(tracker: TrackerConfig) -> tuple[Route, ...]:
    """The script (open: a page's <script> tag sends no key, and it holds no data), and the
    renamed browser endpoint when there is one: /api/event's rule, so it answers exactly as
    /api/event does on both lanes."""
    script = Route(tracker.script_path, ("GET",), TRACKER, None, rate_limit=None, rule=SCRIPT_RULE)
    if tracker.endpoint_path == PLAUSIBLE_PATH:
        return (script,)
    return script, _browser(tracker.endpoint_path, rule=PLAUSIBLE_RULE)


def route_table(tracker: TrackerConfig | None = None) -> RouteTable:
    """The daemon's routes, with the tracker's paths as configured (default: the defaults)."""
    return RouteTable(
        [*FIXED_ROUTES, *tracker_routes(tracker or TrackerConfig())], fallback=UNKNOWN
    )


def tracker_path_clashes(tracker: TrackerConfig) -> Iterator[tuple[str, str]]:
    """(key, what it clashes with) for each tracker path another route already answers (a
    literal path would shadow a templated one: ``/api/v1/metrics/x.js``)."""
    fixed = RouteTable(FIXED_ROUTES, fallback=UNKNOWN)
    paths = (("script_path", tracker.script_path), ("endpoint_path", tracker.endpoint_path))
    for key, path in paths:
        taken = fixed.match(path.encode())
        if taken is not UNKNOWN and not (key == "endpoint_path" and path == PLAUSIBLE_PATH):
            yield key, f"the route {taken.template}"
    if tracker.script_path == tracker.endpoint_path != PLAUSIBLE_PATH:  # (that one is above)
        yield "endpoint_path", "tracker.script_path"
