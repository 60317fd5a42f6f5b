"""The shop's services, routes and call graph."""

import json
from datetime import datetime, timezone

from obslab.generator.truth import catalog_rows
from obslab.shop.topology import CHECKOUT_SHARE, DEFAULT_PORTS, PROFILES, SERVICES, callees, start_order


def test_the_frontend_calls_cart_and_payment_and_they_call_nobody():
    assert callees("frontend") == ("cart", "payment")
    assert callees("cart") == callees("payment") == ()


def test_callees_start_before_their_callers():
    order = start_order()
    assert sorted(order) == sorted(SERVICES)
    assert order.index("frontend") > max(order.index("cart"), order.index("payment"))


def test_payment_sees_the_checkout_share_of_the_frontends_requests():
    shares = {c.service: c.share for c in PROFILES["frontend"].calls}
    assert shares == {"cart": 1.0, "payment": CHECKOUT_SHARE}  # browse and checkout both read the cart


def test_the_catalogue_rows_carry_the_call_graph():
    rows = {r["service"]: r for r in catalog_rows(tuple(PROFILES.values()), "shop", datetime.now(timezone.utc))}
    assert rows["frontend"]["calls"] == "cart,payment"
    assert rows["payment"]["calls"] is None
    assert json.loads(rows["cart"]["endpoints"]) == ["/cart/items"]


def test_each_service_has_its_own_default_port():
    assert set(DEFAULT_PORTS) == set(SERVICES)
    assert len(set(DEFAULT_PORTS.values())) == len(SERVICES)
