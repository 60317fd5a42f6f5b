"""Locust's script for the shop: shoppers who browse and check out, each at a set pace.

`obslab shop load` runs it headless; by hand:

    locust -f lib/obslab/shop/locustfile.py --headless -u 4 -r 4 --user-rate 0.5 \
        --host http://127.0.0.1:8701 --run-time 60s

Each user makes `--user-rate` requests a second (Locust's constant_throughput), so the shop gets
users x that; BROWSE_WEIGHT to CHECKOUT_WEIGHT of them are /browse and /checkout.

Only Locust should load this file: importing Locust patches the whole process for gevent, so an
ordinary import (obslab's import test, say) defines nothing.
"""

from __future__ import annotations

import sys

from obslab.shop.topology import BROWSE_WEIGHT, CHECKOUT_WEIGHT

DEFAULT_USER_RATE = 1.0  # requests a second of one user


if "locust" in sys.modules:  # loaded by Locust, which has patched the process already
    from locust import HttpUser, constant_throughput, events, task

    @events.init_command_line_parser.add_listener
    def _options(parser) -> None:
        parser.add_argument("--user-rate", type=float, default=DEFAULT_USER_RATE, env_var="LOCUST_USER_RATE",
                            help="requests a second of each user")

    class Shopper(HttpUser):
        """Browses and checks out at the pace of --user-rate."""

        def on_start(self) -> None:
            self._pace = constant_throughput(self.environment.parsed_options.user_rate)

        def wait_time(self) -> float:
            return self._pace(self)

        @task(BROWSE_WEIGHT)
        def browse(self) -> None:
            self.client.get("/browse")

        @task(CHECKOUT_WEIGHT)
        def checkout(self) -> None:
            self.client.get("/checkout")
