"""The built-in services (used when a scenario declares none) and the shape of normal responses."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServiceProfile:
    """One simulated service as the generator runs it: a scenario's `services:` entry, resolved."""

    name: str
    endpoints: tuple[str, ...]
    latency_ms: float  # mean latency of a normal request
    error_rate: float  # chance that a normal request fails
    share: float = 1.0  # traffic weight among the scenario's services
    sla_ms: float | None = None
    slo_availability: float | None = None
    calls: tuple["Call", ...] = ()


@dataclass(frozen=True)
class Call:
    """A declared dependency: `share` of the caller's requests call `service`; its faults reach the
    caller `lag_seconds` later."""

    service: str
    share: float
    lag_seconds: float


# The three services of the lab, with error rates of their own: payments (card networks, a
# third party) fails most, search (read-only, cached) least. A scenario's `traffic.error_rate`
# overrides them when it is given.
BUILT_IN: dict[str, ServiceProfile] = {
    p.name: p for p in (
        ServiceProfile("checkout", ("/api/cart", "/api/checkout", "/api/cart/items"), 150.0, 0.010,
                       sla_ms=300.0, slo_availability=0.99),
        ServiceProfile("payments", ("/api/payment/process", "/api/payment/validate", "/api/refund"), 200.0, 0.015,
                       sla_ms=400.0, slo_availability=0.99),
        ServiceProfile("search", ("/api/search", "/api/autocomplete", "/api/filters"), 50.0, 0.005,
                       sla_ms=150.0, slo_availability=0.99),
    )
}

LATENCY_FLOOR_MS = 10.0
ERROR_CODES = (500, 503, 504, 429)
OK_CODES = (200, 201, 204)
