"""What the shop is: its services, their routes, their own latency, who calls whom, default ports.

    frontend  /checkout  -> cart /cart/items, then payment /payment/charge
              /browse    -> cart /cart/items

The services are written down as the generator's ServiceProfile, so the service catalogue the
detector and root-cause logic read gets the shop's call graph in the generator's own format.
"""

from __future__ import annotations

from obslab.generator.profiles import Call, ServiceProfile

SCENARIO = "shop"  # the `scenario` of the shop's ground truth and catalogue rows

FRONTEND, CART, PAYMENT = "frontend", "cart", "payment"

# The load's mix: Locust task weights of the frontend's two routes.
CHECKOUT_WEIGHT = 1
BROWSE_WEIGHT = 3
CHECKOUT_SHARE = CHECKOUT_WEIGHT / (CHECKOUT_WEIGHT + BROWSE_WEIGHT)

# latency_ms: a handler's own work (a sleep), before any calls; the shop adds no errors of its own.
PROFILES: dict[str, ServiceProfile] = {
    p.name: p for p in (
        ServiceProfile(FRONTEND, ("/checkout", "/browse"), latency_ms=5.0, error_rate=0.0, sla_ms=300.0,
                       slo_availability=0.99,
                       calls=(Call(CART, share=1.0, lag_seconds=0.0), Call(PAYMENT, CHECKOUT_SHARE, 0.0))),
        ServiceProfile(CART, ("/cart/items",), latency_ms=10.0, error_rate=0.0, sla_ms=100.0,
                       slo_availability=0.99),
        ServiceProfile(PAYMENT, ("/payment/charge",), latency_ms=40.0, error_rate=0.0, sla_ms=200.0,
                       slo_availability=0.99),
    )
}
SERVICES = tuple(PROFILES)

DEFAULT_PORTS: dict[str, int] = {FRONTEND: 8701, CART: 8702, PAYMENT: 8703}


def callees(service: str) -> tuple[str, ...]:
    """The services `service` calls."""
    return tuple(c.service for c in PROFILES[service].calls)


def start_order() -> tuple[str, ...]:
    """Callees before their callers, so a caller's first request finds them up."""
    return tuple(sorted(SERVICES, key=lambda s: len(callees(s))))
