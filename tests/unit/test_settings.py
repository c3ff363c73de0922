"""Settings parsing: durations, booleans, lists, and clear errors."""

from __future__ import annotations

import pytest

from rowhook.settings import DEFAULT_RETRY_SCHEDULE_S, Settings, SettingsError, env_names, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30", 30.0),
        ("1.5s", 1.5),
        ("250ms", 0.25),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("7d", 604800.0),
        ("1w", 604800.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "-5s", "5 parsecs", ""])
def test_parse_duration_refuses_nonsense(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_defaults_and_environment() -> None:
    assert Settings.from_env({}).retry_schedule_s == DEFAULT_RETRY_SCHEDULE_S
    settings = Settings.from_env(
        {
            "ROWHOOK_ALLOW_PRIVATE_TARGETS": "1",
            "ROWHOOK_RETRY_SCHEDULE_S": "0, 200ms, 1s",
            "ROWHOOK_CLAIM_BATCH": "10",
        }
    )
    assert settings.allow_private_targets is True
    assert settings.retry_schedule_s == (0.0, 0.2, 1.0)
    assert settings.claim_batch == 10


def test_invalid_values_name_the_variable() -> None:
    with pytest.raises(SettingsError, match="ROWHOOK_ALLOW_PRIVATE_TARGETS='maybe'"):
        Settings.from_env({"ROWHOOK_ALLOW_PRIVATE_TARGETS": "maybe"})
    with pytest.raises(SettingsError, match="ROWHOOK_CLAIM_BATCH"):
        Settings.from_env({"ROWHOOK_CLAIM_BATCH": "many"})


def test_env_names_cover_every_setting() -> None:
    assert "ROWHOOK_DATABASE_URL" in env_names()
    assert "ROWHOOK_ALLOW_PRIVATE_TARGETS" in env_names()
