"""Bot detection by the crawler-user-agents list."""

from __future__ import annotations

import re

import crawleruseragents  # type: ignore[import-untyped]
import pytest

from twisted_rta.web.bots import (
    MAX_CACHED_LENGTH,
    BotDetector,
    compile_patterns,
    crawler_patterns,
)

BROWSERS = {
    "chrome desktop": (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.0.0 Safari/537.36"
    ),
    "edge desktop": (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0"
    ),
    "firefox desktop": "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "safari desktop": (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/18.1 Safari/605.1.15"
    ),
    "chrome android": (
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.0.0 Mobile Safari/537.36"
    ),
    "firefox android": "Mozilla/5.0 (Android 14; Mobile; rv:133.0) Gecko/133.0 Firefox/133.0",
    "safari iphone": (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1"
    ),
    "chrome iphone": (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) CriOS/131.0.6778.73 Mobile/15E148 Safari/604.1"
    ),
}
BOTS = {
    "googlebot": "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "googlebot smartphone": (
        "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/131.0.6778.69 Mobile Safari/537.36 "
        "(compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
    ),
    "bingbot": (
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; bingbot/2.0; "
        "+http://www.bing.com/bingbot.htm) Chrome/116.0.1938.76 Safari/537.36"
    ),
    "curl": "curl/8.5.0",
    "python-requests": "python-requests/2.32.3",
    "gptbot": (
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; "
        "+https://openai.com/gptbot)"
    ),
    # Headless Chromium's default (our own browser tests): a bot by the list's HeadlessChrome.
    "headless chromium": (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "HeadlessChrome/156.0.0.0 Safari/537.36"
    ),
}


@pytest.fixture(scope="module")
def detector() -> BotDetector:
    return BotDetector()


@pytest.mark.parametrize("name", sorted(BROWSERS))
def test_current_browsers_are_not_bots(detector: BotDetector, name: str) -> None:
    assert detector.is_bot(BROWSERS[name]) is False


@pytest.mark.parametrize("name", sorted(BOTS))
def test_crawlers_and_http_tools_are_bots(detector: BotDetector, name: str) -> None:
    assert detector.is_bot(BOTS[name]) is True


@pytest.mark.parametrize("user_agent", [None, "", " ", "\t \r\n"])
def test_no_or_a_blank_user_agent_is_a_bot(detector: BotDetector, user_agent: str | None) -> None:
    assert detector.is_bot(user_agent) is True


def test_the_list_is_case_sensitive_as_its_patterns_are_written(detector: BotDetector) -> None:
    assert detector.is_bot("Googlebot/2.1") is True
    assert detector.is_bot("googlebot/2.1") is False  # the list spells out Googlebot\/
    assert detector.is_bot("Wget/1.21") and detector.is_bot("wget/1.21")  # [wW]get


def test_it_answers_as_the_package_does_for_every_example_in_the_list(
    detector: BotDetector,
) -> None:
    examples = [
        instance
        for entry in crawleruseragents.CRAWLER_USER_AGENTS_DATA
        for instance in entry.get("instances", ())
    ]
    assert len(examples) > 1000
    assert all(detector.is_bot(example) for example in examples)
    for user_agent in [*examples, *BROWSERS.values(), *BOTS.values()]:
        assert detector.is_bot(user_agent) == crawleruseragents.is_crawler(user_agent)


def test_the_merged_regex_finds_what_the_plain_alternation_finds() -> None:
    # A text found inside a longer one, before and after it; escapes; regex syntax.
    patterns = ["abc", "abd", "ab", "q", "qrs", r"x\/y", r"^start", "[wW]ord", "a.c", "end$", "lit"]
    merged = compile_patterns(patterns)
    plain = re.compile("|".join(patterns))
    texts = [
        "zabz",
        "a",
        "x/y",
        "xy",
        "start here",
        "not start",
        "word",
        "Word",
        "aXc",
        "the end",
        "end.",
        "li",
        "lit",
        "q",
        "qr",
        "",
    ]
    for text in texts:
        assert bool(merged.search(text)) == bool(plain.search(text)), text
    # All of the real list, on text made of pieces of its examples.
    everything = crawler_patterns()
    merged, plain = compile_patterns(everything), re.compile("|".join(everything))
    for text in [*BROWSERS.values(), "Mozilla/5.0 (compatible)", "Java/1.8", "okhttp/4.12"]:
        assert bool(merged.search(text)) == bool(plain.search(text)), text


def test_no_patterns_match_nothing() -> None:
    assert BotDetector([]).is_bot(BOTS["googlebot"]) is False
    assert BotDetector([]).is_bot(None) is True


def test_custom_patterns_replace_the_list() -> None:
    detector = BotDetector([r"^MyCrawler\/"])
    assert detector.is_bot("MyCrawler/1.0") is True
    assert detector.is_bot(BOTS["googlebot"]) is False


def test_answers_are_cached_in_a_bounded_lru() -> None:
    detector = BotDetector(cache_size=2)
    assert detector.is_bot(BOTS["googlebot"]) is True
    assert detector.is_bot(BOTS["googlebot"]) is True
    assert detector.is_bot(BROWSERS["chrome desktop"]) is False
    info = detector.cache_info()
    assert (info.hits, info.misses, info.currsize, info.maxsize) == (1, 2, 2, 2)
    detector.is_bot(BROWSERS["firefox desktop"])  # evicts googlebot, the least recent
    assert detector.is_bot(BOTS["googlebot"]) is True
    assert detector.cache_info().misses == 4
    assert detector.cache_info().currsize == 2


def test_blank_and_very_long_user_agents_are_not_cached() -> None:
    detector = BotDetector()
    detector.is_bot(None)
    detector.is_bot("  ")
    long_browser = BROWSERS["chrome desktop"] + " x" * MAX_CACHED_LENGTH
    long_bot = "x" * MAX_CACHED_LENGTH + " Googlebot/2.1"
    assert detector.is_bot(long_browser) is False
    assert detector.is_bot(long_bot) is True
    assert detector.cache_info().currsize == 0


def test_each_detector_has_its_own_cache() -> None:
    first, second = BotDetector(cache_size=8), BotDetector(cache_size=8)
    first.is_bot(BOTS["curl"])
    assert first.cache_info().currsize == 1
    assert second.cache_info().currsize == 0
