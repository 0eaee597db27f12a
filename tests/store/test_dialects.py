"""URL parsing, dialect SQL and the prefix range bound: no database needed."""

from __future__ import annotations

import pytest

from twisted_rta.store.dialects import POSTGRESQL, SQLITE, lock_key, settings_from_url
from twisted_rta.store.sql import prefix_upper_bound


def test_sqlite_absolute_and_relative_urls() -> None:
    absolute = settings_from_url("sqlite:///var/lib/rta/rta.sqlite3", max_connections=8)
    relative = settings_from_url("sqlite:data/rta%20x.sqlite3", max_connections=8)

    assert absolute.connect_args == ("/var/lib/rta/rta.sqlite3",)
    assert relative.connect_args == ("data/rta x.sqlite3",)
    assert absolute.dialect is SQLITE
    # One writer: one connection, whatever max_connections says.
    assert (absolute.min_connections, absolute.max_connections) == (1, 1)
    assert absolute.connect_kwargs["check_same_thread"] is False


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_postgresql_urls_keep_their_own_options(scheme: str) -> None:
    settings = settings_from_url(
        f"{scheme}://rta:secret@db.example:5433/rta?connect_timeout=3", max_connections=6
    )

    assert settings.dialect is POSTGRESQL
    assert settings.max_connections == 6
    assert "connect_timeout" not in settings.connect_kwargs
    assert settings.connect_kwargs["application_name"] == "twisted-rta"
    assert settings.description == "postgresql://db.example:5433/rta"
    assert "secret" not in settings.description


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://root@localhost/rta", "unsupported database URL scheme 'mysql'"),
        ("/var/lib/rta.sqlite3", "unsupported database URL scheme ''"),
        ("sqlite://host/rta.sqlite3", "takes no host"),
        ("sqlite:", "no file path"),
        ("sqlite:///rta.sqlite3?mode=ro", "no query"),
        ("postgresql://host/db?bogus=1", "invalid postgresql URL"),
    ],
)
def test_bad_urls_are_refused_clearly(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        settings_from_url(url, max_connections=4)


def test_invalid_postgresql_url_errors_hide_the_password() -> None:
    with pytest.raises(ValueError, match="invalid postgresql URL") as raised:
        settings_from_url("postgresql://rta:secret@[::1/db", max_connections=4)
    assert "secret" not in str(raised.value)


def test_placeholders_per_dialect() -> None:
    query = "SELECT 1 WHERE a = ? AND b = ?"
    assert SQLITE.sql(query) == query
    assert POSTGRESQL.sql(query) == "SELECT 1 WHERE a = %s AND b = %s"


def test_lock_keys_are_stable_signed_64_bit() -> None:
    assert lock_key("node-a") == lock_key("node-a") != lock_key("node-b")
    assert -(2**63) <= lock_key("node-a") < 2**63


@pytest.mark.parametrize(
    ("prefix", "upper"),
    [
        ("events:", "events;"),
        ("page:/a", "page:/b"),
        ("a\U0010ffff", "b"),
        ("\ud7ff", "\ue000"),
        ("\U0010ffff\U0010ffff", None),
    ],
)
def test_prefix_upper_bound(prefix: str, upper: str | None) -> None:
    assert prefix_upper_bound(prefix) == upper


def test_only_postgresql_locks_the_rows_a_write_transaction_reads() -> None:
    # SQLite's BEGIN IMMEDIATE holds the database's write lock; it has no FOR UPDATE.
    assert SQLITE.for_update == ""
    assert POSTGRESQL.for_update == " FOR UPDATE"
    assert POSTGRESQL.sql("SELECT mark FROM t WHERE node_id = ?" + POSTGRESQL.for_update) == (
        "SELECT mark FROM t WHERE node_id = %s FOR UPDATE"
    )
