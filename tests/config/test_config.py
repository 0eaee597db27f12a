"""Config: YAML -> frozen attrs, with every error naming its key path."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from twisted_rta.config import Config, ConfigError, config_from_mapping, load_config, summary

REPO = Path(__file__).resolve().parents[2]


def error_for(raw: object) -> str:
    with pytest.raises(ConfigError) as caught:
        config_from_mapping(raw)
    return str(caught.value)


def test_documented_default_file_equals_built_in_defaults() -> None:
    assert load_config(REPO / "config" / "rta.yaml") == Config()


def test_no_path_gives_defaults() -> None:
    config = load_config(None)
    assert config.server.listen == ("tcp:8080:interface=0.0.0.0",)
    assert [(r.size, r.retention) for r in config.windows.resolutions] == [
        (60.0, 172800.0),
        (3600.0, 7776000.0),
        (86400.0, 63072000.0),
    ]
    assert config.windows.flush_interval == 5.0
    assert config.windows.grace == 10.0
    assert config.limits.max_batch_events == 1000


def test_config_is_frozen() -> None:
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        Config().server.shutdown_timeout = 1.0  # type: ignore[misc]


def test_empty_file_and_null_sections_mean_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_config(path) == Config()
    assert config_from_mapping({"server": None}) == Config()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("10s", 10.0),
        ("1m", 60.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("1.5s", 1.5),
        (30, 30.0),
        (2.5, 2.5),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert config_from_mapping({"server": {"shutdown_timeout": text}}).server.shutdown_timeout == (
        seconds
    )


def test_sizes_with_units() -> None:
    limits = config_from_mapping(
        {"limits": {"max_body_bytes": "2MiB", "max_event_bytes": "64KiB"}}
    ).limits
    assert limits.max_body_bytes == 2 * 1024 * 1024
    assert limits.max_event_bytes == 65536
    assert config_from_mapping({"limits": {"max_body_bytes": "1MB"}}).limits.max_body_bytes == (
        1_000_000
    )


def test_seed_host_and_port_become_a_listen_endpoint() -> None:
    server = config_from_mapping({"server": {"host": "127.0.0.1", "port": 9000}}).server
    assert server.listen == ("tcp:9000:interface=127.0.0.1",)
    ipv6 = config_from_mapping({"server": {"host": "::1", "port": 9000}}).server
    assert ipv6.listen == ("tcp:9000:interface=\\:\\:1",)


def test_listen_accepts_a_single_string() -> None:
    server = config_from_mapping({"server": {"listen": "tcp:1234"}}).server
    assert server.listen == ("tcp:1234",)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            {"processing": {"worker_count": 0}},
            "processing.worker_count: must be an integer between 1 and 256, got 0",
        ),
        (
            {"processing": {"worker_count": "4"}},
            "processing.worker_count: must be an integer between 1 and 256, got '4'",
        ),
        (
            {"processing": {"worker_count": True}},
            "processing.worker_count: must be an integer between 1 and 256, got True",
        ),
        (
            {"processing": {"buffer_size": -1}},
            "processing.buffer_size: must be an integer >= 1, got -1",
        ),
        (
            {"windows": {"grace": "soon"}},
            "windows.grace: must be a duration like 500ms, 10s, 1m, 1h or 1d, got 'soon'",
        ),
        (
            {"windows": {"flush_interval": "0s"}},
            "windows.flush_interval: must be a duration between 0.05 and 3600 seconds, got '0s'",
        ),
        (
            {"windows": {"resolutions": []}},
            "windows.resolutions: must be a non-empty list of {size, retention}, got []",
        ),
        (
            {"windows": {"resolutions": [{"size": "1m"}]}},
            "windows.resolutions[0].retention: is required",
        ),
        (
            {"windows": {"resolutions": [{"size": "1m", "retention": "30s"}]}},
            "windows.resolutions[0].retention: must be a duration >= 60 seconds, got '30s'",
        ),
        (
            {
                "windows": {
                    "resolutions": [
                        {"size": "1m", "retention": "1d"},
                        {"size": "90s", "retention": "1d"},
                    ]
                }
            },
            "windows.resolutions[1].size: must be a whole multiple of the previous size (60s) "
            "and larger, got '90s'",
        ),
        (
            {"windows": {"resolutions": [{"size": "1m", "retention": "1d", "keep": 1}]}},
            "windows.resolutions[0].keep: unknown key (expected size, retention)",
        ),
        (
            {"store": {"max_pending_windows": 0}},
            "store.max_pending_windows: must be an integer >= 1, got 0",
        ),
        (
            {"logging": {"level": "verbose"}},
            "logging.level: must be one of debug, info, warn, error, got 'verbose'",
        ),
        ({"logging": {"format": "xml"}}, "logging.format: must be one of console, json, got 'xml'"),
        (
            {"logging": {"access_log": "yes"}},
            "logging.access_log: must be true or false, got 'yes'",
        ),
        (
            {"limits": {"max_body_bytes": "huge"}},
            "limits.max_body_bytes: must be a size in bytes >= 1 (e.g. 65536 or 64KiB), got 'huge'",
        ),
        ({"server": {"listen": []}}, "server.listen: must be a non-empty list of strings, got []"),
        (
            {"server": {"listen": ["tcp:80", 5]}},
            "server.listen[1]: must be a non-empty string, got 5",
        ),
        (
            {"server": {"port": 70000}},
            "server.port: must be an integer between 0 and 65535, got 70000",
        ),
        (
            {"server": {"port": 8080, "listen": ["tcp:1"]}},
            "server.listen: give either listen or host/port, not both",
        ),
        (
            {"cors": {"ingest": {"allowed_origins": "*", "extra": 1}}},
            "cors.ingest.extra: unknown key (expected one of allowed_origins)",
        ),
        (
            {"cors": {"allowed_origins": ["*"]}},
            "cors.allowed_origins: unknown key (expected one of ingest, query)",
        ),
        (
            {"procesing": {}},
            "procesing: unknown key (expected one of server, logging, processing, windows, "
            "limits, store, journal, dedup, cors, auth, rate_limits, metrics, privacy, tracker)",
        ),
        ({"windows": ["size"]}, "windows: must be a mapping of keys, got ['size']"),
        (["server"], "must be a mapping of keys, got ['server']"),
    ],
)
def test_errors_name_the_key_path_and_expectation(raw: object, expected: str) -> None:
    assert error_for(raw) == expected


def test_a_buffer_smaller_than_a_full_batch_is_refused() -> None:
    # The queue takes a batch whole: a full batch over buffer_size would get 503 forever.
    message = error_for({"processing": {"buffer_size": 999}, "limits": {"max_batch_events": 1000}})
    assert message == (
        "processing.buffer_size: must be at least limits.max_batch_events (1000), "
        "or a full batch could never be queued; got 999"
    )
    assert error_for({"processing": {"buffer_size": 500}}).startswith("processing.buffer_size")
    config = config_from_mapping(
        {"processing": {"buffer_size": 1000}, "limits": {"max_batch_events": 1000}}
    )
    assert config.processing.buffer_size == config.limits.max_batch_events


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read config file .*nope\.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_invalid_yaml_reports_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("server:\n  listen: [unclosed\n")
    with pytest.raises(ConfigError, match=r"is not valid YAML at line \d+, column \d+"):
        load_config(path)


def test_summary_is_flat_and_complete() -> None:
    flat = summary(Config())
    assert flat["processing.worker_count"] == 2
    assert flat["server.listen"] == ["tcp:8080:interface=0.0.0.0"]
    assert flat["limits.max_event_age"] == 604800.0
    assert flat["windows.resolutions"][0] == {"size": 60.0, "retention": 172800.0}

    def leaves(cls: type) -> int:
        return sum(
            leaves(f.metadata["section"]) if "section" in f.metadata else 1
            for f in attrs.fields(cls)
        )

    assert len(flat) == leaves(Config)
    assert flat["cors.query.allowed_origins"] == []
    assert flat["rate_limits.ingest.events_burst"] == 200_000.0


def test_durations_in_weeks_and_years() -> None:
    raw = {
        "windows": {
            "resolutions": [{"size": "1d", "retention": "2y"}, {"size": "1w", "retention": "5y"}]
        }
    }
    sizes = config_from_mapping(raw).windows.resolutions
    assert [(r.size, r.retention) for r in sizes] == [
        (86400.0, 2 * 365 * 86400.0),
        (604800.0, 5 * 365 * 86400.0),
    ]


def test_store_url_defaults_to_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    from twisted_rta.config import StoreConfig, store_url

    assert store_url(StoreConfig(data_dir=str(tmp_path)), {}) == (
        "sqlite:///" + str(tmp_path / "rta.sqlite3").lstrip("/")
    )
    assert store_url(StoreConfig(), {"STATE_DIRECTORY": "/var/lib/rta:/var/lib/other"}) == (
        "sqlite:///var/lib/rta/rta.sqlite3"
    )
    assert store_url(StoreConfig(), {}).endswith("/rta-data/rta.sqlite3")
    assert store_url(StoreConfig(url="postgresql://rta@db/rta"), {}) == "postgresql://rta@db/rta"


def test_default_node_id_uses_hostname_and_port() -> None:
    from twisted_rta.config import default_node_id

    assert default_node_id(("tcp:8080:interface=0.0.0.0",), "web-1") == "web-1:8080"
    assert default_node_id(("tcp6:port=9000",), "web-1") == "web-1:9000"
    assert default_node_id(("systemd:domain=INET:name=http",), "web-1") == (
        "web-1:systemd_domain_INET_name_http"
    )


def test_store_password_is_redacted_in_the_summary() -> None:
    config = config_from_mapping({"store": {"url": "postgresql://rta:s3cret@db:5432/rta"}})
    assert summary(config)["store.url"] == "postgresql://rta:***@db:5432/rta"


def test_every_error_is_reported_at_once() -> None:
    from twisted_rta.config import ConfigErrors

    with pytest.raises(ConfigErrors) as caught:
        config_from_mapping(
            {
                "processing": {"worker_count": 0, "buffer_size": "big"},
                "logging": {"level": "loud"},
                "typo": 1,
            }
        )
    messages = [str(error) for error in caught.value.errors]
    assert messages == [
        "typo: unknown key (expected one of server, logging, processing, windows, limits, "
        "store, journal, dedup, cors, auth, rate_limits, metrics, privacy, tracker)",
        "logging.level: must be one of debug, info, warn, error, got 'loud'",
        "processing.worker_count: must be an integer between 1 and 256, got 0",
        "processing.buffer_size: must be an integer >= 1, got 'big'",
    ]
    assert str(caught.value) == "; ".join(messages)
