"""`obslab demo --source spans` (`make demo-otel`): the one-command demo on real spans.

The demo of obslab.demo with the generator replaced by the shop under load:

    broker, Collector   started first and stopped last, the Collector before the broker (it flushes
                        the spans it holds to Kafka on the way out)
    shop                frontend, cart and payment (obslab.shop), detached as `obslab shop start`
                        starts them: a new shop run (ground truth, service catalogue)
    load                Locust, headless, LOAD_RATE requests a second on the frontend until stopped
    stream              STREAM_SOURCE=spans: the SERVER spans of TOPIC_OTLP_SPANS into the windows
    detect, narrate, dashboard   as in `obslab demo`

Every process gets STREAM_SOURCE=spans; the supervisor restarts the load like the other stages (a new
Locust run replays nothing). Nothing switches a fault by itself: the demo says how, and says when each
service has WARM_UP_WINDOWS final windows, the history the detectors judge against:

    obslab shop fault payment error_surge --size 0.3 --seconds 180    (from another terminal)

then prints each incident narrated, with how long after the shop's latest fault began. Ctrl-C (or
`obslab demo-stop`) stops the processes, then the shop, the Collector and the broker.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from obslab import demo
from obslab.detect.config import DetectorConfig
from obslab.lab import Lab
from obslab.otel.collector import LocalCollector, otlp_http_endpoint
from obslab.settings import Settings
from obslab.shop.run import LOCUSTFILE, Shop
from obslab.shop.topology import FRONTEND, SCENARIO, SERVICES

LOAD_USERS = 4  # Locust users: a slow response holds up one shopper, not the whole load
LOAD_RATE = 10.0  # requests a second on the frontend: a checkout in four reaches payment, 150 a 60-s window
WARM_UP_WINDOWS = DetectorConfig.min_history + 1  # final windows per service: the first is cut short by the load's start
FAULT_HINT = "obslab shop fault payment error_surge --size 0.3 --seconds 180"


def load_command(shop: Shop, users: int = LOAD_USERS, rate: float = LOAD_RATE) -> list[str]:
    """Locust, headless, until stopped: `users` shoppers making `rate` requests a second between them on
    the shop's frontend (`obslab shop load` without its end)."""
    return [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary", "-u", str(users),
            "-r", str(users), "--user-rate", f"{rate / users:g}", "--host", shop.url(FRONTEND),
            "--exit-code-on-error", "0"]


def commands(settings: Settings, shop: Shop, dashboard_port: int) -> dict[str, list[str]]:
    """The demo's processes: those of `obslab demo`, with the load on `shop` in the generator's place."""
    lab = demo.commands(settings, dashboard_port)
    return {"stream": lab["stream"], "detect": lab["detect"], "narrate": lab["narrate"],
            demo.LOAD: load_command(shop), "dashboard": lab["dashboard"]}


def process_env() -> dict[str, str]:
    """What every process of the demo gets on top of the environment: the stream counts spans."""
    return {"STREAM_SOURCE": "spans"}


def start_services(settings: Settings) -> Shop:
    """The broker, the Collector and the shop (detached); what started is stopped again when one fails."""
    from obslab.broker import LocalBroker

    LocalBroker(settings).start()
    try:
        LocalCollector(settings).start()
        shop = Shop(settings)
        shop.start(Lab(settings).store)  # also creates and migrates the store before any stage opens it
    except BaseException:
        stop_services(settings)
        raise
    return shop


def stop_services(settings: Settings) -> list[str]:
    """Stop the shop and the Collector, if they run; what was stopped. (`obslab.demo.stop` calls this
    before it stops the broker.)"""
    shop, collector, stopped = Shop(settings), LocalCollector(settings), []
    if any(shop.pid(service) is not None for service in SERVICES):
        shop.stop()
        stopped.append("shop")
    if collector.pid() is not None:
        collector.stop()
        stopped.append("Collector")
    return stopped


def start(settings: Settings, dashboard_port: int) -> list[demo.ProcessInfo]:
    """The services, then every process of the demo; returns the processes."""
    shop = start_services(settings)
    return [demo.spawn(settings, name, cmd, process_env())
            for name, cmd in commands(settings, shop, dashboard_port).items()]


# ---------------------------------------------------------------------- what the demo says


def warm_up_seconds(settings: Settings) -> float:
    """About how long until every service has WARM_UP_WINDOWS final windows (a window is final once
    the watermark has passed its end; the first, cut short, counts too): 465-485 s measured with the
    defaults, against 480 s from this."""
    return WARM_UP_WINDOWS * settings.window_seconds + settings.watermark_seconds


def final_windows(store) -> dict[str, int]:
    """service -> final windows the store holds of it."""
    return dict(store.query("SELECT service, count(*) FROM service_metrics WHERE is_final GROUP BY 1"))


def warmed_up(store) -> bool:
    """Every shop service has WARM_UP_WINDOWS final windows: a fault now is judged against a history."""
    counts = final_windows(store)
    return all(counts.get(service, 0) >= WARM_UP_WINDOWS for service in SERVICES)


def other_services(store, settings: Settings, now: datetime | None = None) -> list[str]:
    """Services other than the shop's with windows in the detector's lookback (an earlier demo's):
    the detector takes their silence for outages."""
    since = (now or datetime.now(timezone.utc)) - timedelta(minutes=settings.detect_lookback_minutes)
    rows = store.query("SELECT DISTINCT service FROM service_metrics WHERE window_end > ? ORDER BY 1", [since])
    return [service for (service,) in rows if service not in SERVICES]


def narrations(store, seen: set[str], since: datetime | None = None) -> list[tuple[str, str, datetime, float | None]]:
    """(incident id, title, first narrated at, seconds since the shop's latest fault began then, or None)
    of each incident narrated (at or after `since`, when given: this run's) that is not in `seen`, oldest first;
    adds them to `seen`."""
    rows = store.query("SELECT incident_id, min(created_at), arg_min(title, created_at) FROM incident_summaries "
                       "WHERE created_at >= ? GROUP BY 1 ORDER BY 2",
                       [since or datetime.min.replace(tzinfo=timezone.utc)])
    starts = [at for (at,) in store.query("SELECT start_time FROM injected_incidents WHERE scenario = ? ORDER BY 1",
                                          [SCENARIO])]
    out = []
    for incident_id, at, title in rows:
        if incident_id in seen:
            continue
        seen.add(incident_id)
        began = [s for s in starts if s <= at]
        out.append((incident_id, title, at, (at - began[-1]).total_seconds() if began else None))
    return out


@dataclass
class News:
    """What the demo has said so far, and what it says next (`news`, called every second)."""

    settings: Settings
    hinted: bool = False  # how to switch a fault on
    warm: bool = False  # that the detectors have their history
    seen: set[str] = field(default_factory=set)  # incidents whose narration was said

    def news(self, store, began: float) -> list[str]:
        """New lines for the user: at first how to switch a fault on, then when the detectors are warmed
        up, then each incident narrated (`began`: the demo's start, a time.time())."""
        s, out = self.settings, []
        if not self.hinted:
            self.hinted = True
            out.append(f"shop: {Shop(s).url(FRONTEND)} under Locust's load ({LOAD_USERS} users, {LOAD_RATE:g} "
                       f"requests/s); spans through the Collector at {otlp_http_endpoint(s)}")
            out.append(f"switch a fault on once the detectors have {WARM_UP_WINDOWS} windows of each service "
                       f"(~{warm_up_seconds(s) / 60:.0f} min; said below), from another terminal: {FAULT_HINT}")
            others = other_services(store, s)
            if others:
                out.append(f"note: the store holds recent windows of {', '.join(others)} (an earlier demo): the "
                           "detector will take their silence for outages. For a clean demo stop this one, run "
                           "`make clean-data`, then `make demo-otel` again")
        if not self.warm and warmed_up(store):
            self.warm = True
            out.append(f"the detectors have {WARM_UP_WINDOWS} windows of each service ({time.time() - began:.0f} s "
                       f"after start): switch a fault on now, e.g. {FAULT_HINT}")
        for _, title, at, after in narrations(store, self.seen, datetime.fromtimestamp(began, timezone.utc)):
            when = f"{after:.0f} s after the latest fault began" if after is not None else "no fault switched on"
            out.append(f"incident narrated at {at.astimezone(timezone.utc):%H:%M:%S} UTC, {when}: {title}")
        return out


def run(settings: Settings, stopping, say, dashboard_port: int, minutes: float | None = None,
        max_restarts: int = demo.MAX_RESTARTS) -> None:
    """`obslab demo --source spans`: start the services and every process, then `demo.supervise` them,
    saying how to switch a fault on, when the detectors have their history, and each narrated incident."""
    demo.supervise(settings, lambda: start(settings, dashboard_port), News(settings).news, stopping, say,
                   dashboard_port, minutes, max_restarts)
