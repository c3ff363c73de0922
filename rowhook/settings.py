"""The one settings object, read from ROWHOOK_* environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any

ENV_PREFIX = "ROWHOOK_"
# Immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (the Standard Webhooks / Svix schedule).
DEFAULT_RETRY_SCHEDULE_S = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)


class SettingsError(ValueError):
    """An environment variable holds a value rowhook cannot use."""


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None
    allow_private_targets: bool = False
    # relay
    poll_interval_s: float = 5.0
    retry_schedule_s: tuple[float, ...] = DEFAULT_RETRY_SCHEDULE_S
    retry_jitter: float = 0.2
    request_timeout_s: float = 15.0
    connect_timeout_s: float = 5.0
    response_capture_bytes: int = 1024
    lease_s: float = 60.0
    disable_after_s: float = 5 * 24 * 3600.0
    # A failing subscription waits for the earliest retry of its failed deliveries before it is probed
    # again, but no longer than this (relay/policy.py subscription_changes).
    probe_wait_max_s: float = 60.0
    relay_concurrency: int = 64
    claim_batch: int = 200
    summary_interval_s: float = 60.0
    shutdown_grace_s: float = 10.0
    # Prometheus metrics of the relay on http://HOST:PORT/metrics; port 0 serves none. Loopback by
    # default: the endpoint takes no token (docker-compose sets 0.0.0.0 inside the container).
    relay_metrics_port: int = 0
    relay_metrics_host: str = "127.0.0.1"
    # api
    # Database connections of one API process; requests beyond it wait up to 5 s, then answer 503.
    api_pool_size: int = 10
    secret_grace_s: float = 24 * 3600.0
    page_size: int = 50
    # api: most events one POST /subscriptions/{id}/replay queues (the answer says when it was capped)
    replay_max_events: int = 10000
    # api quotas per account, counted in the database (they hold across API processes); over is a 429
    max_subscriptions_per_account: int = 100
    pings_per_minute: int = 30
    replays_per_minute: int = 10
    # /metrics shows figures of every account, so it does not take account tokens: it is open when this
    # is empty (restrict it by network) and otherwise wants `Authorization: Bearer <metrics_token>`.
    metrics_token: str = ""
    # retention (rowhook prune)
    keep_succeeded_s: float = 7 * 24 * 3600.0
    keep_failed_s: float = 30 * 24 * 3600.0
    log_level: str = "INFO"
    # api server (rowhook serve): connections served at once (more are answered 503 and closed at once,
    # so a flood cannot use up file descriptors), the time a client has to send a whole request, and
    # how long an idle keep-alive connection stays open.
    api_max_connections: int = 500
    api_read_timeout_s: float = 10.0
    api_keep_alive_s: float = 5.0

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = ENV_PREFIX + f.name.upper()
            if name not in env:
                continue
            values[f.name] = _parse(name, env[name], f.default)
        values.update(overrides)
        return cls(**values)


def env_names() -> set[str]:
    """Every environment variable the settings read (the docker-compose test checks against it)."""
    return {ENV_PREFIX + f.name.upper() for f in fields(Settings)}


def _parse(name: str, raw: str, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            return _parse_bool(raw)
        if isinstance(default, tuple):
            return tuple(parse_duration(part) for part in raw.split(",") if part.strip())
        if isinstance(default, float):
            return parse_duration(raw)
        if isinstance(default, int):
            return int(raw)
        return raw
    except ValueError as exc:
        raise SettingsError(f"{name}={raw!r}: {exc}") from None


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("expected 1/0, true/false, yes/no or on/off")


_UNITS_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(raw: str) -> float:
    """Seconds from '30', '1.5s', '250ms', '5m', '2h', '7d' or '1w'."""
    text = raw.strip().lower()
    for unit in sorted(_UNITS_S, key=len, reverse=True):
        if text.endswith(unit):
            number = text[: -len(unit)]
            break
    else:
        number, unit = text, "s"
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"not a duration: {raw!r} (use e.g. 30s, 5m, 2h, 7d)") from None
    if value < 0:
        raise ValueError(f"duration must not be negative: {raw!r}")
    return value * _UNITS_S[unit]
