"""HTTPListener: one endpoint string bound to the Site, failing the start loudly."""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IProtocolFactory
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_rta.ops.status import ListenerState

log = Logger()


class ListenError(Exception):
    """An endpoint could not be bound (port in use, bad endpoint string, no permission)."""


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
    ) -> None:
        self.description = description
        self._reactor = reactor
        self.factory = factory
        self.port: IListeningPort | None = None
        # Where readiness reads whether this endpoint is bound (see ops/status.py).
        self.state = state if state is not None else ListenerState(description)

    @property
    def address(self) -> str:
        if self.port is None:
            return "not listening"
        host = self.port.getHost()
        if hasattr(host, "port"):
            return f"{host.host}:{host.port}"
        return str(getattr(host, "name", host))

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        if self.port is None:
            try:
                self._bind()
            except ListenError as error:
                # One clear line first; twistd then removes its pid file and exits 1.
                log.critical("cannot start: {reason}", reason=str(error))
                raise

    def startService(self) -> None:
        super().startService()
        if self.port is None:
            self._bind()
        log.info(
            "listening on {address} ({endpoint})", address=self.address, endpoint=self.description
        )

    def _bind(self) -> None:
        try:
            endpoint = serverFromString(self._reactor, self.description)
        except (ValueError, KeyError, TypeError) as error:
            raise ListenError(f"invalid listen endpoint {self.description!r}: {error}") from None
        outcome: list[object] = []
        endpoint.listen(self.factory).addBoth(outcome.append)
        if not outcome:
            raise ListenError(f"listen endpoint {self.description!r} did not bind at once")
        result = outcome[0]
        if isinstance(result, Failure):
            raise ListenError(f"cannot listen on {self.description!r}: {result.getErrorMessage()}")
        self.port = result
        self.state.address = self.address

    def stopService(self) -> Deferred[None]:
        super().stopService()
        port, self.port = self.port, None
        self.state.address = None
        if port is None:
            return succeed(None)
        log.info("stopped listening on {endpoint}", endpoint=self.description)
        return maybeDeferred(port.stopListening)
