"""The names of delivery and subscription statuses, once for all Python code.

The SQL CHECK constraints of rowhook.deliveries and rowhook.subscriptions spell the same names;
tests/integration/test_statuses.py reads them from an installed schema and compares.
"""

from __future__ import annotations

from typing import Literal, get_args

DeliveryStatus = Literal["pending", "delivering", "succeeded", "failed", "cancelled", "held"]
DELIVERY_STATUSES: tuple[DeliveryStatus, ...] = get_args(DeliveryStatus)
# A delivery in one of these is still under way (waiting, in flight or held): it cannot be retried by hand.
UNFINISHED_DELIVERY_STATUSES: tuple[DeliveryStatus, ...] = ("pending", "delivering", "held")
# What one attempt leaves its delivery in: done, to be tried again, or given up.
AttemptOutcome = Literal["succeeded", "pending", "failed"]

SubscriptionStatus = Literal["active", "paused", "disabled"]
SUBSCRIPTION_STATUSES: tuple[SubscriptionStatus, ...] = get_args(SubscriptionStatus)
# What an integrator may set with PATCH; only the relay disables.
SettableSubscriptionStatus = Literal["active", "paused"]


def new_delivery_status(subscription_status: str) -> DeliveryStatus:
    """A delivery queued for a paused subscription is held until it resumes; otherwise it is pending."""
    return "held" if subscription_status == "paused" else "pending"
