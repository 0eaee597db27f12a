"""End to end: start-up failures of the real process are one line and exit status 1; the
node-id lease, the open-file limit and the listen backlog as the real process applies them."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

import pytest
import pytest_twisted
import yaml
from twisted.internet import reactor

from tests.e2e.process import DaemonProcess
from tests.e2e.test_daemon import TIMEOUT, start
from tests.postgres import POSTGRES_URL, admin, postgres_unreachable

pytestmark = pytest.mark.e2e


async def failed_start(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> DaemonProcess:
    daemon = DaemonProcess.spawn(list(args), tmp_path, env=env)
    reason = await daemon.ended.addTimeout(TIMEOUT, reactor)
    assert getattr(reason, "exitCode", None) == 1, daemon.output_text()
    assert "Traceback" not in daemon.output_text()
    return daemon


def cannot_start(daemon: DaemonProcess) -> list[str]:
    return [m for m in daemon.messages() if m.startswith("cannot start")]


def write_config(tmp_path: Path, store: dict[str, object]) -> Path:
    path = tmp_path / "rta.yaml"
    path.write_text(yaml.safe_dump({"store": store, "logging": {"access_log": False}}))
    return path


@pytest_twisted.ensureDeferred
async def test_an_invalid_listen_port_is_a_config_error(tmp_path: Path) -> None:
    daemon = await failed_start(tmp_path, "--listen", "tcp:99999")
    assert "".join(daemon.other_output).strip() == (
        "twistd rta: config error: --listen: port must be a number from 0 to 65535 in "
        "'tcp:99999', got '99999' (see: twistd rta --help)"
    )
    config = tmp_path / "bad.yaml"
    config.write_text("server:\n  listen: ['tcp:99999']\n")
    daemon = await failed_start(tmp_path, "-c", str(config))
    assert "config error: server.listen[0]: port must be" in "".join(daemon.other_output)


@pytest_twisted.ensureDeferred
async def test_an_explicit_node_id_held_by_a_live_process_is_refused(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"data_dir": str(tmp_path / "data")})
    first, _ = await start(tmp_path, "-c", str(config), "--node-id", "web-1")
    try:
        second = await failed_start(
            tmp_path, "-c", str(config), "--node-id", "web-1", "--listen", "tcp:0"
        )
    finally:
        await first.terminate()
    # Refused before anything is opened: the journal's state directory is claimed first.
    assert "".join(second.other_output).strip() == (
        "cannot start: node id 'web-1' is already held by a live process on this store "
        "(give each process its own --node-id)"
    ), second.output_text()


@pytest_twisted.ensureDeferred
async def test_postgresql_without_the_extra_is_a_one_line_config_error(tmp_path: Path) -> None:
    fake = tmp_path / "no-psycopg" / "psycopg"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError(\"No module named 'psycopg'\")\n")
    config = write_config(tmp_path, {"url": "postgresql://rta@127.0.0.1:5432/rta"})
    daemon = await failed_start(tmp_path, "-c", str(config), env={"PYTHONPATH": str(fake.parent)})
    assert "".join(daemon.other_output).strip() == (
        "twistd rta: config error: store.url: PostgreSQL needs the psycopg package: "
        "pip install 'twisted-rta[postgresql]'"
    )


def _postgres_or_skip() -> None:
    try:
        admin("SELECT 1 AS {}", "x")
    except Exception as error:
        postgres_unreachable(error)


@pytest_twisted.ensureDeferred
async def test_a_database_that_does_not_exist_is_fatal_at_start(tmp_path: Path) -> None:
    _postgres_or_skip()
    name = f"rta_missing_{secrets.token_hex(4)}"
    config = write_config(tmp_path, {"url": POSTGRES_URL.format(name=name)})
    daemon = await failed_start(tmp_path, "-c", str(config), "--listen", "tcp:0")
    assert cannot_start(daemon) == [
        f'cannot start: store postgresql://127.0.0.1:5432/{name}: database "{name}" does not exist'
    ], daemon.output_text()
    assert not [m for m in daemon.messages() if "retrying" in m]


@pytest_twisted.ensureDeferred
async def test_an_unknown_role_is_fatal_at_start(tmp_path: Path) -> None:
    _postgres_or_skip()
    role = f"rta_nobody_{secrets.token_hex(4)}"
    url = f"postgresql://{role}@127.0.0.1:5432/postgres"
    config = write_config(tmp_path, {"url": url})
    daemon = await failed_start(tmp_path, "-c", str(config), "--listen", "tcp:0")
    assert cannot_start(daemon) == [
        f'cannot start: store postgresql://127.0.0.1:5432/postgres: role "{role}" does not exist'
    ], daemon.output_text()


@pytest_twisted.ensureDeferred
async def test_no_privilege_on_schema_public_is_fatal_at_start(tmp_path: Path) -> None:
    _postgres_or_skip()
    suffix = secrets.token_hex(4)
    role, database = f"rta_noprivs_{suffix}", f"rta_noprivs_{suffix}"
    admin("CREATE ROLE {} LOGIN", role)
    try:
        admin("CREATE DATABASE {}", database)  # owned by postgres: rta may not CREATE
        try:
            url = f"postgresql://{role}@127.0.0.1:5432/{database}"
            config = write_config(tmp_path, {"url": url})
            daemon = await failed_start(tmp_path, "-c", str(config), "--listen", "tcp:0")
        finally:
            admin("DROP DATABASE IF EXISTS {} WITH (FORCE)", database)
    finally:
        admin("DROP ROLE IF EXISTS {}", role)
    assert cannot_start(daemon) == [
        f"cannot start: store postgresql://127.0.0.1:5432/{database}: permission denied "
        "for schema public (SQLSTATE 42501)"
    ], daemon.output_text()


@pytest_twisted.ensureDeferred
async def test_a_low_file_limit_is_raised_to_the_hard_limit_and_warned_about(
    tmp_path: Path,
) -> None:
    daemon = DaemonProcess.spawn(
        ["--listen", "tcp:0:interface=127.0.0.1"],
        tmp_path,
        wrapper=("prlimit", "--nofile=256:512", "--"),
    )
    try:
        raised = await daemon.wait_for(lambda r: "open file limit raised" in r.get("message", ""))
        warning = await daemon.wait_for(lambda r: "is below server.max_connections" in r["message"])
    finally:
        await daemon.terminate()
    assert (raised["before"], raised["soft"]) == (256, 512)
    assert warning["message"].startswith(
        "open file limit 512 (hard 512) is below server.max_connections + 64 = 10064"
    )
    assert warning["level"] == "warn"


@pytest_twisted.ensureDeferred
async def test_the_listen_backlog_reaches_the_socket(tmp_path: Path) -> None:
    config = tmp_path / "rta.yaml"
    config.write_text(yaml.safe_dump({"server": {"listen_backlog": 777}}))
    daemon, base = await start(tmp_path, "-c", str(config))
    try:
        port = base.rsplit(":", 1)[1]
        listing = subprocess.run(
            ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, timeout=10
        ).stdout
    finally:
        await daemon.terminate()
    # For a listening socket, ss shows the backlog as Send-Q.
    fields = listing.split()
    assert fields[0] == "LISTEN" and fields[2] == "777", listing
