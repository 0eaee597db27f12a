"""What a browser event's request says beyond its body: the traffic source (the referrer's
site, or the UTM / ref parameters of the page URL), the campaign parameters, and the
browser, OS and device class of the User-Agent. Computed per request at the edge (the
User-Agent and referrer answers cached), never on the batch path; the User-Agent itself
is never kept, only these families.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from urllib.parse import parse_qsl, urlsplit

from ua_parser import parse as parse_user_agent

DIRECT = "Direct / None"
# The properties this adds to a browser event (they win over props of the same name).
ENRICHED = (
    "source",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
    "browser",
    "os",
    "device",
)
_UTM = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")
_MAX_VALUE = 200  # campaign values are labels, not documents
# Referrer hosts (the domain, or its last labels) -> the source they count as.
_SOURCES = {
    "google": "Google",
    "bing.com": "Bing",
    "duckduckgo.com": "DuckDuckGo",
    "yahoo.com": "Yahoo!",
    "yandex": "Yandex",
    "baidu.com": "Baidu",
    "ecosia.org": "Ecosia",
    "search.brave.com": "Brave",
    "qwant.com": "Qwant",
    "startpage.com": "Startpage",
    "facebook.com": "Facebook",
    "l.facebook.com": "Facebook",
    "lm.facebook.com": "Facebook",
    "m.facebook.com": "Facebook",
    "instagram.com": "Instagram",
    "t.co": "Twitter",
    "twitter.com": "Twitter",
    "x.com": "Twitter",
    "linkedin.com": "LinkedIn",
    "lnkd.in": "LinkedIn",
    "reddit.com": "Reddit",
    "old.reddit.com": "Reddit",
    "news.ycombinator.com": "Hacker News",
    "youtube.com": "YouTube",
    "m.youtube.com": "YouTube",
    "pinterest.com": "Pinterest",
    "tiktok.com": "TikTok",
    "github.com": "GitHub",
    "mastodon.social": "Mastodon",
    "bsky.app": "Bluesky",
    "chatgpt.com": "ChatGPT",
    "perplexity.ai": "Perplexity",
}
_TABLETS = ("iPad", "Tablet", "Kindle", "Silk", "PlayBook")


class Enricher:
    """The enrichment of one browser request; answers for a User-Agent or a referrer host
    are remembered (a bounded LRU per instance)."""

    def __init__(self, cache_size: int = 4096) -> None:
        self._client: Callable[[str], tuple[str, str, str]] = lru_cache(maxsize=cache_size)(
            _client_of
        )
        self._named: Callable[[str], str] = lru_cache(maxsize=cache_size)(_source_of_host)
        # ua-parser compiles its ~1,000 regexes on the first parse (~0.15 s here): pay it
        # now, at start, not on the reactor thread in the first browser request.
        _client_of("Mozilla/5.0 (X11; Linux x86_64)")

    def properties(
        self, url: str, referrer: str | None, site: str, user_agent: str | None
    ) -> dict[str, str]:
        """``source``, the ``utm_*`` parameters present, ``browser``, ``os``, ``device``."""
        found: dict[str, str] = {}
        query = dict(parse_qsl(urlsplit(url).query, keep_blank_values=False))
        for name in _UTM:
            value = query.get(name, "").strip()
            if value:
                found[name] = value[:_MAX_VALUE]
        # As in Plausible: utm_source, then source, then ref, then the referrer.
        tagged = found.get("utm_source") or query.get("source", "").strip()
        tagged = tagged or query.get("ref", "").strip()
        found["source"] = tagged[:_MAX_VALUE] if tagged else self._referrer_source(referrer, site)
        browser, system, device = self._client(user_agent or "")
        found.update(browser=browser, os=system, device=device)
        return found

    def _referrer_source(self, referrer: str | None, site: str) -> str:
        if not referrer:
            return DIRECT
        try:
            host = (urlsplit(referrer).hostname or "").lower()
        except ValueError:
            return DIRECT
        if not host:
            return DIRECT
        bare = host.removeprefix("www.")
        if bare == site or bare.endswith("." + site):
            return DIRECT  # a page of the same site: not a source
        return self._named(bare)


def _source_of_host(host: str) -> str:
    """The known name of a referrer host (``www.google.co.uk`` is Google), else the host."""
    if host in _SOURCES:
        return _SOURCES[host]
    labels = host.split(".")
    for size in (3, 2):
        if len(labels) > size and ".".join(labels[-size:]) in _SOURCES:
            return _SOURCES[".".join(labels[-size:])]
    for label in labels[:-1]:  # google.de, google.co.uk, yandex.ru
        if label in _SOURCES:
            return _SOURCES[label]
    return host[:_MAX_VALUE]


def _client_of(user_agent: str) -> tuple[str, str, str]:
    """(browser family, OS family, device class: Desktop, Mobile or Tablet)."""
    parsed = parse_user_agent(user_agent) if user_agent else None
    browser = parsed.user_agent.family if parsed and parsed.user_agent else "Other"
    system = parsed.os.family if parsed and parsed.os else "Other"
    device_family = parsed.device.family if parsed and parsed.device else ""
    if any(mark in user_agent or mark in device_family for mark in _TABLETS):
        device = "Tablet"
    elif "Mobi" in user_agent:  # phones say Mobile (iPhone, Android phones, Firefox OS)
        device = "Mobile"
    elif system == "Android":  # Android tablets leave Mobile out
        device = "Tablet"
    else:
        device = "Desktop"
    return browser, system, device
