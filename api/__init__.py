"""The subscription API (Litestar): tokens, resources, subscriptions, deliveries."""
