"""Retry-After parsing never raises: delta-seconds and HTTP dates count, anything else is ignored."""

from __future__ import annotations

import random
import string
from datetime import UTC, datetime

import pytest

from relay.policy import MAX_RETRY_AFTER_S, decide, parse_retry_after

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
SCHEDULE = (0.0, 5.0, 300.0)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("0", 0.0),
        ("120", 120.0),
        (" 7 ", 7.0),
        ("86400", MAX_RETRY_AFTER_S),
        ("86401", MAX_RETRY_AFTER_S),
        ("9" * 30, MAX_RETRY_AFTER_S),
        ("9" * 5000, MAX_RETRY_AFTER_S),
        ("Thu, 01 Jan 2026 12:01:00 GMT", 60.0),
        ("Thu, 01 Jan 2026 11:00:00 GMT", 0.0),  # in the past: no wait beyond the schedule
        ("Fri, 31 Dec 9999 23:59:59 GMT", MAX_RETRY_AFTER_S),
    ],
)
def test_delta_seconds_and_http_dates_count(header: str, seconds: float) -> None:
    assert parse_retry_after(header, NOW) == seconds


@pytest.mark.parametrize(
    "header",
    [
        "Mon, 01 Jan 99999999999 00:00:00 GMT",  # the header that stopped every relay
        "Mon, 01 Jan 2020 00:00:00 +99999999999999",
        "Mon, 99 Jan 2020 00:00:00 GMT",
        "Mon, 01 Jan 2020 99:99:99 GMT",
        "-5",
        "-0",
        "1.5",
        "1e9",
        "inf",
        "nan",
        "0x10",
        "soon",
        "²",  # str.isdigit() says yes, float() says no
        "١٢٣",  # Arabic-Indic digits
        "\uff11\uff12",  # fullwidth digits
        "\udcff\udcfe",  # undecodable bytes as aiohttp hands them over
        "\x00",
        "",
        "   ",
    ],
)
def test_anything_else_is_ignored(header: str) -> None:
    assert parse_retry_after(header, NOW) is None


def test_random_garbage_never_raises() -> None:
    rng = random.Random(8)
    alphabet = string.printable + "äé²١\udcff\x00" + "Mon, Jan GMT +-:0123456789"
    for _ in range(5000):
        header = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40)))
        seconds = parse_retry_after(header, NOW)
        assert seconds is None or 0.0 <= seconds <= MAX_RETRY_AFTER_S


@pytest.mark.parametrize("header", ["Mon, 01 Jan 99999999999 00:00:00 GMT", "²", "-5", "9" * 400])
def test_decide_retries_on_the_schedule_or_the_cap_whatever_the_header(header: str) -> None:
    outcome = decide(attempts_done=1, status_code=503, retry_after=header, schedule_s=SCHEDULE, jitter=0.0)
    assert outcome.status == "pending"
    assert outcome.retry_in_s in (5.0, MAX_RETRY_AFTER_S)
