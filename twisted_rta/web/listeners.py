"""HTTPListener: one endpoint string bound to the Site, failing the start loudly."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IReactorTime
from twisted.logger import Logger, LogPublisher, globalLogPublisher
from twisted.python.failure import Failure

from twisted_rta.config.endpoints import with_backlog
from twisted_rta.ops.status import ListenerState

log = Logger()


class ListenError(Exception):
    """An endpoint could not be bound (port in use, bad endpoint string, no permission)."""


class StartupFailed(SystemExit, ListenError):
    """The start failed and its one line is logged: exit 1 without a traceback.

    twistd catches ``Exception`` from ``privilegedStartService`` to remove its pid file and
    tell a daemonising parent, then re-raises; Python ends a process quietly, with the
    status in ``code``, only for a SystemExit. This is both. ``str()`` is the reason;
    ``code`` stays 1 so that Python prints nothing more.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.code = 1


# Errors of accept() that mean the process or system ran out of a resource (descriptors,
# buffers, memory): the connection waits in the backlog and /health may fail meanwhile.
RESOURCE_ACCEPT_ERRORS = frozenset({"EMFILE", "ENFILE", "ENOBUFS", "ENOMEM"})
_COUNTED = "rta_accept_error_counted"


class AcceptErrorLog:
    """Counts the accept() failures Twisted's TCP ports report, and logs them as errors.

    Twisted only logs them at info level ("Could not accept new connection (EMFILE)", or
    "EMFILE encountered" when it sheds connections with its reserved descriptor) and the
    event does not say which port: every listener watches, the first to see an event marks
    it counted. The error line is repeated at most every ``every`` seconds.
    """

    def __init__(
        self, count: Callable[[str], None], clock: IReactorTime, every: float = 10.0
    ) -> None:
        self._count = count
        self._clock = clock
        self._every = every
        self._last_logged: float | None = None
        self._unlogged = 0

    def __call__(self, event: dict[str, Any]) -> None:
        if not str(event.get("log_namespace", "")).startswith("twisted.internet"):
            return
        reason = event.get("acceptError")
        if reason is None and "EMFILE encountered" in str(event.get("log_format", "")):
            reason = "EMFILE"
        if reason is None or event.get(_COUNTED):
            return
        event[_COUNTED] = True
        self._count(str(reason))
        if reason not in RESOURCE_ACCEPT_ERRORS:
            return  # ECONNABORTED: the client gave up first
        self._unlogged += 1
        now = self._clock.seconds()
        if self._last_logged is not None and now - self._last_logged < self._every:
            return
        log.error(
            "cannot accept connections: {reason} ({count} time(s)); out of file descriptors or "
            "memory: raise LimitNOFILE / ulimit -n or lower server.max_connections",
            reason=reason,
            count=self._unlogged,
        )
        self._last_logged, self._unlogged = now, 0


class HTTPListener(Service):
    """Binds in ``privilegedStartService`` so a port in use stops twistd before it runs.

    The endpoints Twisted ships (tcp, unix, systemd) listen synchronously, so their
    result is known at once; an endpoint that would bind later is refused as an error
    rather than leaving a daemon that may run without its port.
    """

    def __init__(
        self,
        reactor: object,
        description: str,
        factory: IProtocolFactory,
        state: ListenerState | None = None,
        *,
        backlog: int | None = None,
        on_accept_error: Callable[[str], None] | None = None,
        log_publisher: LogPublisher = globalLogPublisher,
    ) -> None:
        self.description = description
        # ``backlog`` applies to tcp/tcp6/ssl/reuseport endpoints without their own backlog=.
        self._bind_description = (
            description if backlog is None else with_backlog(description, backlog)
        )
        self._reactor = reactor
        self.factory = factory
        self.port: IListeningPort | None = None
        self._log_publisher = log_publisher
        self._accept_errors: AcceptErrorLog | None = None
        if on_accept_error is not None:
            self._accept_errors = AcceptErrorLog(on_accept_error, cast(IReactorTime, reactor))
        # Where readiness reads whether this endpoint is bound (see ops/status.py).
        self.state = state if state is not None else ListenerState(description)

    @property
    def address(self) -> str:
        if self.port is None:
            return "not listening"
        host: Any = self.port.getHost()
        if hasattr(host, "port"):
            return f"{host.host}:{host.port}"
        return str(getattr(host, "name", host))

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        if self.port is None:
            try:
                self._bind()
            except ListenError as error:
                # One clear line; twistd then removes its pid file and the process exits 1.
                log.critical("cannot start: {reason}", reason=str(error))
                raise StartupFailed(str(error)) from None

    def startService(self) -> None:
        super().startService()
        if self.port is None:
            self._bind()
        if self._accept_errors is not None:
            self._log_publisher.addObserver(self._accept_errors)  # type: ignore[arg-type]
        log.info(
            "listening on {address} ({endpoint})", address=self.address, endpoint=self.description
        )

    def _bind(self) -> None:
        try:
            endpoint = serverFromString(self._reactor, self._bind_description)
        except (ValueError, KeyError, TypeError) as error:
            raise ListenError(f"invalid listen endpoint {self.description!r}: {error}") from None
        outcome: list[object] = []
        endpoint.listen(self.factory).addBoth(outcome.append)
        if not outcome:
            raise ListenError(f"listen endpoint {self.description!r} did not bind at once")
        result = outcome[0]
        if isinstance(result, Failure):
            raise ListenError(f"cannot listen on {self.description!r}: {result.getErrorMessage()}")
        self.port = cast(IListeningPort, result)
        self.state.address = self.address

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._accept_errors is not None:
            self._log_publisher.removeObserver(self._accept_errors)  # type: ignore[arg-type]
        port, self.port = self.port, None
        self.state.address = None
        if port is None:
            return succeed(None)
        log.info("stopped listening on {endpoint}", endpoint=self.description)
        stopped: Deferred[None] = maybeDeferred(cast(Callable[[], Any], port.stopListening))
        return stopped
