"""The query app: the GET routes under /api/v1 (mounted there by the edge) that read the
query layer: all-time metrics, ranges, series, breakdowns, and this node's stats and windows
(seed-compatible envelopes)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
from klein import Klein
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest

from twisted_rta.aggregation.metrics import Metric
from twisted_rta.aggregation.resolution import Resolution
from twisted_rta.query.aliases import alias_target, aliases_of, family_alias_target
from twisted_rta.query.figures import SlidingFigures, WindowFigures, window_figures
from twisted_rta.query.labels import LabelError, LabelSelection, rank_value
from twisted_rta.query.listing import MAX_PAGE, MetricViews, PageRequest
from twisted_rta.query.service import QueryService, StoreUnavailable
from twisted_rta.query.sliding import MAX_SPAN_READS, latest_end, span_reads, step_ends
from twisted_rta.query.timerange import (
    MAX_POINTS,
    RangeError,
    TimeRange,
    choose_resolution,
    parse_range,
    parse_resolution,
    size_text,
)
from twisted_rta.query.views import (
    metric_view_of,
    range_note,
    range_view,
    sliding_point_view,
    sliding_view,
    tidy_number,
    window_view,
)
from twisted_rta.query.web import (
    SITE,
    WebSummary,
    per_site_metrics,
    site_selection,
    summary_selections,
)
from twisted_rta.timefmt import iso_utc
from twisted_rta.web.errors import add_json_error_handlers
from twisted_rta.web.responses import ApiError, encoded_json_body, json_body

T = TypeVar("T")
_BASE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")
# The metric list is encoded a slice at a time (msgspec: a tenth of the stdlib's time, and
# numbers come out equal; only the exponent form of a float may differ, 1e16 for 1e+16).
_LIST_ENCODER = msgspec.json.Encoder()


def _success(request: IRequest, data: Any, message: str, status: int = 200) -> bytes:
    return json_body(request, {"status": "success", "data": data, "message": message}, status)


class QueryApp:
    app = add_json_error_handlers(Klein())

    def __init__(
        self,
        *,
        clock: IReactorTime,
        query: QueryService,
        resolutions: tuple[Resolution, ...],
        figures: tuple[WindowFigures, ...] = (),
        sliding: tuple[SlidingFigures, ...] = (),
    ) -> None:
        self._clock = clock
        self._query = query
        self._resolutions = resolutions
        self._figures = {spec.size: spec for spec in figures}
        self._sliding = sliding

    @app.route("/metrics", methods=["GET"])
    async def all_metrics(self, request: IRequest) -> bytes:
        site = _site_arg(request)
        page_request = PageRequest(
            prefix=_arg(request, "prefix"),
            after=_cursor_arg(request, "after"),
            limit=_optional_int_arg(request, "limit", minimum=1, maximum=MAX_PAGE),
            only=None if site is None else self._site_series(site),
        )
        pieces: list[bytes] = []
        page = await self._query.metrics(page_request)
        await self._query.in_slices(page.steps(lambda views: pieces.append(_members(views))))
        count = len(page.names)
        if count:
            message = f"retrieved {count} metrics"
        else:
            message = "no more metrics" if page_request.paginated else "no metrics yet"
        if not page.complete:
            message += " (this node only: the store could not be read)"
        meta = None
        if page_request.paginated:
            meta = {"limit": page_request.limit, "next": page.next_after}
        return encoded_json_body(request, _list_body(pieces, message, meta))

    @app.route("/metrics/<path:name>/series", methods=["GET"])
    async def metric_series(self, request: IRequest, name: str) -> bytes:
        selection = self._selection(request, name)
        timerange = self._range(request, default_from="-1h", explicit_resolution=True)
        if selection is not None and not selection.reads_total:
            found = await self._history(self._query.selected_series(selection, timerange))
            points = [
                {"start": iso_utc(start), "metric": _labelled_view(name, metric, selection)}
                for start, metric in found
            ]
        else:
            target = alias_target(name, self._query.aggregator.rules) or name
            points = await self._history(self._query.series(target, timerange, shown_as=name))
        data = {"name": name, **range_view(timerange), "points": points}
        return _success(request, data, f"{len(points)} points of {name!r}")

    @app.route("/metrics/<path:name>", methods=["GET"])
    async def one_metric(self, request: IRequest, name: str) -> bytes:
        selection = self._selection(request, name)
        ranged = _arg(request, "from") is not None or _arg(request, "to") is not None
        if selection is not None and not selection.reads_total:
            timerange = self._range(request, default_from=None) if ranged else None
            selected = await self._history(self._query.selected(selection, timerange))
            view = _labelled_view(name, selected, selection)
            if timerange is not None:
                view["range"] = range_view(timerange)
            return _success(request, view, f"metric {name!r} found")
        # A Go window-metric name (events, events:<type>, active_users) reads ours.
        target = alias_target(name, self._query.aggregator.rules) or name
        if not ranged:
            metric = await self._query.metric(target, shown_as=name)
            if metric is None:
                raise _metric_not_found(name)
            return _success(request, metric, f"metric {name!r} found")
        timerange = self._range(request, default_from=None)
        merged = await self._history(self._query.metric_over(target, timerange))
        if merged is None:
            raise _metric_not_found(name)
        view = {**metric_view_of(name, merged), "range": range_view(timerange)}
        return _success(request, view, f"metric {name!r} found")

    @app.route("/breakdown/<base>", methods=["GET"])
    async def breakdown(self, request: IRequest, base: str) -> bytes:
        if not _BASE_NAME.fullmatch(base):
            raise ApiError(
                400,
                "invalid_parameter",
                "base must be a metric family name such as page_views, clicks or events_by_type",
                parameter="base",
            )
        limit = _int_arg(request, "limit", default=10, minimum=1, maximum=1000)
        ranged = _arg(request, "from") is not None or _arg(request, "to") is not None
        selection = self._selection(request, base)
        by = _arg(request, "by")
        if by is not None or (selection is not None and _needs_labels(selection)):
            by = _grouping_label(base, selection, by)
            timerange = self._range(request, default_from=None) if ranged else None
            assert selection is not None  # _grouping_label refused a metric without labels
            return await self._label_breakdown(request, selection, by, timerange, limit)
        timerange = self._range(request, default_from=None) if ranged else None
        family = family_alias_target(base, self._query.aggregator.rules) or base
        found = await self._history(self._query.breakdown(family, timerange, limit))
        if found is None:
            raise ApiError(
                404,
                "metric_not_found",
                f"no metric family {base!r}: the rules declare none and no node has seen "
                f"a metric {base}:<value>",
                name=base,
            )
        result, complete = found
        data: dict[str, Any] = {
            "base": base,
            "items": [{"value": key, "count": tidy_number(value)} for key, value in result.items],
            "other": tidy_number(result.other),
            "total": tidy_number(result.total),
        }
        data.update(range_view(timerange) if timerange else {"complete": complete})
        return _success(request, data, f"top {len(result.items)} values of {base!r}")

    @app.route("/web", methods=["GET"])
    async def web(self, request: IRequest) -> bytes:
        """The web analytics summary of ``?site=`` (every site's without it)."""
        site = _site_arg(request)
        selections = summary_selections(self._query.aggregator.rules, site)
        if selections is None:
            raise ApiError(
                404,
                "metric_not_found",
                "the web metrics are off (metrics.web: false): no visitors, visits or pageviews "
                "per site are kept",
                name="web",
            )
        ranged = _arg(request, "from") is not None or _arg(request, "to") is not None
        timerange = self._range(request, default_from=None) if ranged else None
        merged = {
            name: await self._history(self._query.selected(selection, timerange))
            for name, selection in selections.items()
        }
        data = WebSummary.of(merged).view(site)
        if timerange is not None:
            data["range"] = range_view(timerange)
        where = f"site {site!r}" if site is not None else "every site"
        return _success(request, data, f"web analytics of {where}")

    @app.route("/stats", methods=["GET"])
    def stats(self, request: IRequest) -> bytes:
        return _success(request, self._query.stats(self._clock.seconds()), "aggregator statistics")

    @app.route("/windows", methods=["GET"])
    async def windows(self, request: IRequest) -> bytes:
        now = self._clock.seconds()
        found = await self._query.windows(now)
        rules = self._query.aggregator.rules
        windows = []
        for window in found.windows:
            of_size = self._figures.get(window.resolution)
            figures = window_figures(window.metrics, of_size) if of_size is not None else None
            aliases = aliases_of(window.metrics, rules)
            windows.append(window_view(window, figures=figures, aliases=aliases))
        sliding = []
        complete = found.complete
        for spec in self._sliding:
            end = latest_end(spec.step, now)
            try:
                [point], _ = await self._query.sliding(spec, [end], now)
            except StoreUnavailable:
                point, complete = None, False
            sliding.append(sliding_view(spec, point, end))
        data = {"windows": windows, "sliding": sliding, "complete": complete}
        message = f"{len(windows)} windows"
        if not complete:
            message += " (this node only: the store could not be read)"
        return _success(request, data, message)

    @app.route("/windows/sliding", methods=["GET"])
    async def sliding_series(self, request: IRequest) -> bytes:
        """The figures of one sliding window at every step boundary of the range."""
        spec = self._sliding_spec(request)
        now = self._clock.seconds()
        try:
            start, end = parse_range(
                _arg(request, "from"), _arg(request, "to"), now=now, default_from="-1h"
            )
        except RangeError as error:
            raise ApiError(
                400, "invalid_parameter", error.message, parameter=error.parameter
            ) from None
        ends = step_ends(spec.step, start, min(end, now))
        finest = self._resolutions[0].size
        if len(ends) > MAX_POINTS or span_reads(spec, finest, len(ends)) > MAX_SPAN_READS:
            most = min(MAX_POINTS, MAX_SPAN_READS // span_reads(spec, finest, 1))
            raise ApiError(
                400,
                "invalid_parameter",
                f"the range holds {len(ends)} steps of {size_text(spec.step)}; a sliding "
                f"{size_text(spec.size)} window answers at most {most}: shorten it",
                parameter="from",
            )
        points, complete = await self._history(self._query.sliding(spec, ends, now))
        data: dict[str, Any] = {
            "size_seconds": tidy_number(spec.size),
            "step_seconds": tidy_number(spec.step),
            "from": iso_utc(start),
            "to": iso_utc(end),
            "complete": complete,
        }
        if not complete:
            data["note"] = range_note(self._resolutions[0])
        data["points"] = [sliding_point_view(point) for point in points]
        label = f"{size_text(spec.size)} every {size_text(spec.step)}"
        return _success(request, data, f"{len(points)} points of the sliding {label} window")

    async def _label_breakdown(
        self,
        request: IRequest,
        selection: LabelSelection,
        by: str,
        timerange: TimeRange | None,
        limit: int,
    ) -> bytes:
        result, complete = await self._history(
            self._query.breakdown_by(selection, by, timerange, limit)
        )
        base = selection.family.base
        counter = selection.family.kind == "counter"
        items = []
        for key, metric in result.items:
            item: dict[str, Any] = {"value": key, "count": tidy_number(rank_value(metric))}
            if not counter:
                item["metric"] = metric_view_of(base, metric)
            items.append(item)
        data: dict[str, Any] = {"base": base, "by": by}
        if selection.filters:
            data["labels"] = dict(selection.filters)
        data.update(
            items=items,
            other=tidy_number(rank_value(result.other)),
            total=tidy_number(rank_value(result.total)),
        )
        data.update(range_view(timerange) if timerange else {"complete": complete})
        return _success(request, data, f"top {len(items)} values of {by!r} in {base!r}")

    def _sliding_spec(self, request: IRequest) -> SlidingFigures:
        """The configured sliding window ``size`` (and ``step``, when sizes repeat) names;
        ``size`` may be left out when there is one."""
        configured = ", ".join(
            f"{size_text(spec.size)} every {size_text(spec.step)}" for spec in self._sliding
        )
        if not self._sliding:
            raise ApiError(
                400,
                "invalid_parameter",
                "no sliding windows are configured (windows.sliding)",
                parameter="size",
            )
        chosen = list(self._sliding)
        for parameter in ("size", "step"):
            raw = _arg(request, parameter)
            if raw is None:
                continue
            try:
                seconds = parse_resolution(raw)
            except RangeError:
                seconds = None
            chosen = [spec for spec in chosen if getattr(spec, parameter) == seconds]
            if not chosen:
                raise ApiError(
                    400,
                    "invalid_parameter",
                    f"{parameter} must name a configured sliding window ({configured}); "
                    f"got {raw!r}",
                    parameter=parameter,
                )
        if len(chosen) > 1:
            parameter = "size" if _arg(request, "size") is None else "step"
            raise ApiError(
                400,
                "invalid_parameter",
                f"{parameter} is required to choose one of the sliding windows ({configured})",
                parameter=parameter,
            )
        return chosen[0]

    def _selection(self, request: IRequest, name: str) -> LabelSelection | None:
        """The series a query of the labelled rule metric ``name`` takes (its label
        filters are the query parameters that are not the endpoint's own), or None."""
        args = {
            key.decode("utf-8", "replace"): values[0].decode("utf-8", "replace")
            for key, values in request.args.items()
            if values
        }
        rules = self._query.aggregator.rules
        _site_arg(request)  # an empty site is a mistake, not "every site"
        try:
            selection = LabelSelection.of(rules, name, args)
        except LabelError as error:
            if error.parameter == SITE:
                raise _not_per_site(name, per_site_metrics(rules)) from None
            raise ApiError(
                400, "invalid_parameter", str(error), parameter=error.parameter
            ) from None
        if selection is None and SITE in args:
            raise _not_per_site(name, per_site_metrics(rules))
        return selection

    def _site_series(self, site: str) -> Callable[[str], bool]:
        """Whether a metric name is a series of ``site`` in a per-site family."""
        rules = self._query.aggregator.rules
        selections = [site_selection(rules, base, site) for base in per_site_metrics(rules)]
        chosen = [selection for selection in selections if selection is not None]

        def takes(name: str) -> bool:
            return any(
                (labels := selection.labels_of(name)) is not None and labels.get(SITE) == site
                for selection in chosen
            )

        return takes

    def _range(
        self, request: IRequest, *, default_from: str | None, explicit_resolution: bool = False
    ) -> TimeRange:
        now = self._clock.seconds()
        try:
            start, end = parse_range(
                _arg(request, "from"), _arg(request, "to"), now=now, default_from=default_from
            )
            wanted = parse_resolution(_arg(request, "resolution")) if explicit_resolution else None
            return choose_resolution(
                start, end, now=now, resolutions=self._resolutions, wanted_size=wanted
            )
        except RangeError as error:
            raise ApiError(
                400, "invalid_parameter", error.message, parameter=error.parameter
            ) from None

    @staticmethod
    async def _history(pending: Awaitable[T]) -> T:
        try:
            return await pending
        except StoreUnavailable as error:
            raise ApiError(
                503,
                "store_unavailable",
                f"history is unavailable: {error}",
                headers={"Retry-After": "5"},
            ) from None


def _members(views: MetricViews) -> bytes:
    """``"name":{view},...`` of a slice of the list (no braces), or b"" for none."""
    return _LIST_ENCODER.encode(dict(views))[1:-1]


def _list_body(pieces: list[bytes], message: str, meta: dict[str, Any] | None) -> bytes:
    """The success envelope around the list's pieces, as one encoding of it would be."""
    body = [
        b'{"status":"success","data":{',
        b",".join(piece for piece in pieces if piece),
        b'},"message":',
        _LIST_ENCODER.encode(message),
    ]
    if meta is not None:
        body += [b',"meta":', _LIST_ENCODER.encode(meta)]
    body.append(b"}")
    return b"".join(body)


def _labelled_view(name: str, metric: Metric, selection: LabelSelection) -> dict[str, Any]:
    view = metric_view_of(name, metric)
    view["labels"] = dict(selection.filters)
    return view


def _needs_labels(selection: LabelSelection) -> bool:
    """Whether a breakdown of the family needs the label path (filters, several labels,
    or a kind the counter tally cannot sum)."""
    family = selection.family
    return bool(selection.filters) or len(family.labels) > 1 or family.kind != "counter"


def _grouping_label(base: str, selection: LabelSelection | None, by: str | None) -> str:
    """The label a breakdown groups by: ``by``, or the family's only label."""
    if selection is None:
        raise ApiError(
            400,
            "invalid_parameter",
            f"by and label filters apply to a labelled rule metric; {base!r} is not one",
            parameter="by",
        )
    labels = selection.family.labels
    if by is None:
        if len(labels) != 1:
            raise ApiError(
                400,
                "invalid_parameter",
                f"by is required for {base!r}: one of {', '.join(labels)}",
                parameter="by",
            )
        return labels[0]
    if by not in labels:
        raise ApiError(
            400,
            "invalid_parameter",
            f"{base!r} has no label {by!r} (its labels: {', '.join(labels)})",
            parameter="by",
        )
    return by


def _site_arg(request: IRequest) -> str | None:
    site = _arg(request, SITE)
    if site == "":
        raise ApiError(
            400, "invalid_parameter", "site must name a site, e.g. site=example.com", parameter=SITE
        )
    return site


def _not_per_site(name: str, per_site: list[str]) -> ApiError:
    kept = ", ".join(per_site) if per_site else "none (metrics.web: false and no rule has one)"
    return ApiError(
        400,
        "invalid_parameter",
        f"{name!r} is not kept per site; the metrics with a site label: {kept}",
        parameter=SITE,
    )


def _metric_not_found(name: str) -> ApiError:
    return ApiError(404, "metric_not_found", f"metric {name!r} not found", name=name)


def _arg(request: IRequest, name: str) -> str | None:
    values = request.args.get(name.encode("ascii"))
    return values[0].decode("utf-8", "replace") if values else None


def _cursor_arg(request: IRequest, name: str) -> str | None:
    raw = _arg(request, name)
    if raw == "":
        raise ApiError(
            400,
            "invalid_parameter",
            f"{name} must be a metric name: the meta.next of the previous page",
            parameter=name,
        )
    return raw


def _optional_int_arg(request: IRequest, name: str, *, minimum: int, maximum: int) -> int | None:
    if _arg(request, name) is None:
        return None
    return _int_arg(request, name, default=minimum, minimum=minimum, maximum=maximum)


def _int_arg(request: IRequest, name: str, *, default: int, minimum: int, maximum: int) -> int:
    raw = _arg(request, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if not minimum <= value <= maximum:
        raise ApiError(
            400,
            "invalid_parameter",
            f"{name} must be an integer between {minimum} and {maximum}; got {raw!r}",
            parameter=name,
        )
    return value
