# The reuseport: and inherited: endpoint strings for twistd and serverFromString. They import
# only Twisted at load time (a failing import here would only make twistd skip the endpoint).
from twisted.internet.interfaces import IStreamServerEndpointStringParser
from twisted.plugin import IPlugin
from zope.interface import implementer


@implementer(IPlugin, IStreamServerEndpointStringParser)
class _ReusePortParser:
    prefix = "reuseport"

    def parseStreamServer(self, reactor, *args, **kwargs):
        from twisted_rta.web.reuseport import parse_reuseport

        return parse_reuseport(reactor, *args, **kwargs)


@implementer(IPlugin, IStreamServerEndpointStringParser)
class _InheritedParser:
    prefix = "inherited"

    def parseStreamServer(self, reactor, *args, **kwargs):
        from twisted_rta.web.inherited import parse_inherited

        return parse_inherited(reactor, *args, **kwargs)


reuseport = _ReusePortParser()
inherited = _InheritedParser()
