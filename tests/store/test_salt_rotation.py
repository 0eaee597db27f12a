"""SaltRotation: the salts of the previous, current and next periods reach the visitor
ids at start and at every period, older salts are deleted, nodes sharing a store agree."""

from __future__ import annotations

from typing import Any

from tests.conftest import Daemon, make_daemon
from twisted_rta.store.memory import MemoryWindowStore
from twisted_rta.store.salts import SaltRotation, salt_interval

HOUR = 3600


def rotation(daemon: Daemon) -> SaltRotation:
    found = [m for m in daemon.service.monitors if isinstance(m, SaltRotation)]
    assert len(found) == 1
    return found[0]


def node(salts: dict[int, bytes], name: str) -> Daemon:
    store = MemoryWindowStore(node_id=name, salts=salts)
    raw: dict[str, Any] = {"privacy": {"salt_rotation": "1h"}, "store": {"node_id": name}}
    return make_daemon(raw, store=store)


def test_salts_are_read_at_start_and_kept_for_three_periods() -> None:
    salts: dict[int, bytes] = {}
    daemon = node(salts, "a")
    now = daemon.reactor.seconds()
    current = int(now - now % HOUR)
    assert sorted(salts) == [current - HOUR, current, current + HOUR]
    assert all(len(salt) == 32 for salt in salts.values())
    assert len(set(salts.values())) == 3
    assert rotation(daemon).periodic.ticks >= 1


def test_a_new_period_brings_a_new_salt_and_deletes_the_old_ones() -> None:
    salts: dict[int, bytes] = {}
    daemon = node(salts, "a")
    start = daemon.reactor.seconds()
    first = int(start - start % HOUR)
    for _ in range(int(2 * HOUR / salt_interval(HOUR)) + 1):
        daemon.reactor.advance(salt_interval(HOUR))
    now = daemon.reactor.seconds()
    current = int(now - now % HOUR)
    assert current >= first + 2 * HOUR
    assert sorted(salts) == [current - HOUR, current, current + HOUR]
    assert rotation(daemon).deleted >= 2


def test_two_nodes_on_one_store_make_one_visitor_of_a_client() -> None:
    shared: dict[int, bytes] = {}
    a, b = node(shared, "a"), node(shared, "b")
    now = a.reactor.seconds()
    agent = "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0"
    ids = [rotation(d).visitors.visitor("example.com", "192.0.2.1", agent, now) for d in (a, b)]
    assert ids[0] is not None and ids[0] == ids[1]


def test_the_endpoint_waits_for_the_salts() -> None:
    salts: dict[int, bytes] = {}
    store = MemoryWindowStore(node_id="a", salts=salts)
    store.available = False  # the store cannot be reached at start
    daemon = make_daemon({"store": {"node_id": "a"}}, store=store)
    headers = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0"}
    body = '{"n":"pageview","u":"https://example.com/","d":"example.com"}'
    reply = daemon.http.post("/api/event", body, headers=headers)
    assert reply.status == 503 and reply.json["code"] == "visitors_unavailable"
    assert reply.header("Retry-After") == "5"
    store.available = True
    daemon.reactor.advance(60)
    for _ in range(20):
        daemon.reactor.advance(0)
    assert daemon.http.post("/api/event", body, headers=headers).status == 202
