"""Per-account quotas: live subscriptions, pings and replays per minute. Counted in the database under
an advisory lock, so that they hold across every API process; over a quota is a 429."""

from __future__ import annotations

from typing import Literal

from api.database import Conn
from api.errors import TooManyRequests
from api.store import execute, fetch_one, fetch_optional
from rowhook.settings import Settings

WINDOW_S = 60
RateLimited = Literal["ping", "replay"]
# quota -> (setting, what one use is called)
RATE_SETTINGS: dict[RateLimited, tuple[str, str]] = {
    "ping": ("pings_per_minute", "pings"),
    "replay": ("replays_per_minute", "replays"),
}


def env_name(setting: str) -> str:
    return f"ROWHOOK_{setting.upper()}"


async def lock_quota(conn: Conn, account: str, quota: str) -> None:
    await execute(conn, "api_lock_quota", {"quota": quota, "account": account})


async def check_subscription_quota(conn: Conn, account: str, settings: Settings) -> None:
    """Before creating a subscription; the lock holds until the transaction (and its INSERT) ends."""
    await lock_quota(conn, account, "subscriptions")
    row = await fetch_optional(conn, "api_count_live_subscriptions", {"account": account})
    limit = settings.max_subscriptions_per_account
    if row is not None and row["n"] >= limit:
        # No Retry-After: waiting frees nothing, deleting a subscription does.
        raise TooManyRequests(
            f"this account has {row['n']} subscriptions and may have at most {limit}"
            f" ({env_name('max_subscriptions_per_account')}); delete one first"
        )


async def use_rate_quota(conn: Conn, account: str, settings: Settings, quota: RateLimited) -> None:
    """Count one use of a rate-limited action, or raise TooManyRequests with the seconds to wait."""
    setting, uses = RATE_SETTINGS[quota]
    limit: int = getattr(settings, setting)
    await lock_quota(conn, account, quota)
    params = {"account": account, "quota": quota, "limit": limit, "window_s": WINDOW_S}
    row = await fetch_one(conn, "api_use_quota", params)
    if not row["allowed"]:
        wait_s = row["retry_after_s"] or WINDOW_S  # NULL only with a limit of 0
        raise TooManyRequests(
            f"at most {limit} {uses} a minute per account ({env_name(setting)}); retry in {wait_s} s",
            retry_after_s=wait_s,
        )
