"""The simulated services: endpoints and normal-traffic latency."""

from __future__ import annotations

SERVICES: dict[str, tuple[str, ...]] = {
    "checkout": ("/api/cart", "/api/checkout", "/api/cart/items"),
    "payments": ("/api/payment/process", "/api/payment/validate", "/api/refund"),
    "search": ("/api/search", "/api/autocomplete", "/api/filters"),
}

BASELINE_LATENCY_MS: dict[str, float] = {"checkout": 150.0, "payments": 200.0, "search": 50.0}

LATENCY_FLOOR_MS = 10.0
ERROR_CODES = (500, 503, 504, 429)
OK_CODES = (200, 201, 204)
