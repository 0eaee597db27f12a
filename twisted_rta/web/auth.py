"""API keys: who is calling and what they may do (pure; no Twisted)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from attrs import frozen

from twisted_rta.config import ApiKeyConfig

INGEST, READ, ADMIN = "ingest", "read", "admin"


@frozen
class Caller:
    """An authenticated key (its name is what the access log shows)."""

    name: str
    scopes: frozenset[str]
    sites: frozenset[str] | None = None  # the only sites it may read; None: no bound

    def may(self, scope: str) -> bool:
        return scope in self.scopes or ADMIN in self.scopes

    def may_read_site(self, site: str | None) -> bool:
        """Whether a read of ``site`` (None: not a per-site read) is within the key's sites."""
        return self.sites is None or (site is not None and site in self.sites)


@frozen
class Authenticator:
    """Checks presented keys against SHA-256 digests, in constant time per key."""

    keys: tuple[ApiKeyConfig, ...]

    @classmethod
    def from_config(cls, keys: Sequence[ApiKeyConfig]) -> Authenticator:
        return cls(tuple(keys))

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def identify(self, presented: str) -> Caller | None:
        digest = hashlib.sha256(presented.encode("utf-8", "surrogatepass")).hexdigest()
        found: ApiKeyConfig | None = None
        # Compare with every key, so the time taken says nothing about which one matched.
        for key in self.keys:
            if hmac.compare_digest(digest, key.sha256):
                found = key
        if found is None:
            return None
        sites = None if found.sites is None else frozenset(found.sites)
        return Caller(found.name, frozenset(found.scopes), sites)
