"""docker-compose.yml and Dockerfile agree with the CLI and settings (no Docker engine runs here)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from rowhook.cli import build_parser
from rowhook.settings import Settings, env_names

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
ROWHOOK_SERVICES = [name for name, svc in SERVICES.items() if "build" in svc]


def rowhook_commands() -> list[list[str]]:
    commands = []
    for svc in SERVICES.values():
        candidates = [svc.get("command"), (svc.get("healthcheck") or {}).get("test")]
        for cmd in candidates:
            if isinstance(cmd, list) and cmd and cmd[0] == "CMD":
                cmd = cmd[1:]
            if isinstance(cmd, list) and cmd and cmd[0] == "rowhook":
                commands.append(cmd)
    return commands


def test_the_stack_has_postgres_a_one_shot_migrate_the_api_and_a_relay() -> None:
    assert set(SERVICES) >= {"postgres", "migrate", "api", "relay"}
    assert SERVICES["migrate"]["command"] == ["rowhook", "migrate"]
    assert SERVICES["migrate"]["restart"] == "no"
    assert SERVICES["api"]["command"][:2] == ["rowhook", "serve"]
    assert SERVICES["relay"]["command"] == ["rowhook", "relay"]
    for name in ("api", "relay"):
        assert SERVICES[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert SERVICES["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_every_long_running_service_has_a_healthcheck() -> None:
    for name in ("postgres", "api", "relay"):
        assert SERVICES[name]["healthcheck"]["test"], name


@pytest.mark.parametrize("command", rowhook_commands(), ids=lambda c: " ".join(c[1:3]))
def test_every_rowhook_command_parses_with_the_real_cli(command: list[str]) -> None:
    args = build_parser().parse_args(command[1:])
    assert callable(args.handler)


def test_the_api_listens_on_all_interfaces_on_the_published_port() -> None:
    args = build_parser().parse_args(SERVICES["api"]["command"][1:])
    assert args.host == "0.0.0.0"
    assert f"8000:{args.port}" in SERVICES["api"]["ports"]


def test_the_relay_serves_metrics_on_all_interfaces_on_a_port_published_to_loopback() -> None:
    relay = SERVICES["relay"]
    metrics = {k: str(v) for k, v in relay["environment"].items() if k.startswith("ROWHOOK_RELAY_METRICS_")}
    settings = Settings.from_env(metrics)
    assert settings.relay_metrics_host == "0.0.0.0"
    assert settings.relay_metrics_port > 0
    # No fixed host port (so `--scale relay=3` works), and only on the host's loopback: no token guards it.
    assert relay["ports"] == [f"127.0.0.1::{settings.relay_metrics_port}"]
    # The shared variables still reach the relay.
    assert (
        relay["environment"]["ROWHOOK_DATABASE_URL"] == SERVICES["api"]["environment"]["ROWHOOK_DATABASE_URL"]
    )


def test_python_healthchecks_compile() -> None:
    for name, svc in SERVICES.items():
        test = (svc.get("healthcheck") or {}).get("test", [])
        if test[:3] == ["CMD", "python", "-c"]:
            compile(test[3], f"{name} healthcheck", "exec")


def test_every_rowhook_variable_set_is_one_the_settings_read() -> None:
    known = env_names()
    for name in ROWHOOK_SERVICES:
        env = SERVICES[name]["environment"]
        assert "ROWHOOK_DATABASE_URL" in env, name
        unknown = {var for var in env if var.startswith("ROWHOOK_")} - known
        assert not unknown, f"{name} sets variables rowhook never reads: {unknown}"
        assert all(var.startswith("ROWHOOK_") for var in env), name


def test_the_database_url_defaults_to_the_bundled_postgres() -> None:
    url = SERVICES["migrate"]["environment"]["ROWHOOK_DATABASE_URL"]
    default = re.fullmatch(r"\$\{ROWHOOK_DATABASE_URL:-(.+)\}", url)
    assert default is not None
    pg = SERVICES["postgres"]["environment"]
    expected = (
        f"postgresql://{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}@postgres:5432/{pg['POSTGRES_DB']}"
    )
    assert default.group(1) == expected


def test_the_dockerfile_copies_every_packaged_directory_and_ignores_none_of_them() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wheel = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]
    needed = {*wheel["packages"], *wheel["force-include"], "pyproject.toml", "README.md"}
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = {
        src
        for line in dockerfile.splitlines()
        if line.startswith("COPY ") and "--from" not in line
        for src in line.split()[1:-1]
    }
    assert needed <= copied, f"not copied into the build stage: {needed - copied}"
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert not needed & ignored
    for path in copied:
        assert (ROOT / path).exists(), path
