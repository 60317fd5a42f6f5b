"""`obslab shop ...`: start, stop and watch the shop, switch its faults, put load on it."""

from __future__ import annotations

import json

import typer

from obslab.commands import ReportingTyper
from obslab.settings import load_settings

# The shop's modules load numpy, httpx and the generator: imported inside the commands, so that
# every other `obslab` command does not pay for them.

shop_app = ReportingTyper(help="The shop: frontend, cart and payment, traced with OpenTelemetry, with a fault switch.",
                           no_args_is_help=True)

CLEAR = "clear"  # the fault kind that ends a service's running faults
SERVICE_HELP = "frontend | cart | payment"  # the test checks these names against the shop's
KIND_HELP = f"latency_spike | error_surge | endpoint_outage | {CLEAR} (end its running faults now)"


def _port(service: str):
    return typer.Option(None, f"--{service}-port", help=f"port of {service} on 127.0.0.1 "
                                                        "(default: the running shop's, else 8701-8703)")


def _shop(**ports: int | None):
    from obslab.shop.run import Shop

    return Shop(load_settings(), {s: p for s, p in ports.items() if p is not None})


def _print(status) -> None:
    typer.echo(status.message)
    for s in status.services:
        state = "answering" if s.answering else "running, not answering" if s.pid else "stopped"
        pid = f"PID {s.pid}" if s.pid else ""
        typer.echo(f"  {s.service:<9} 127.0.0.1:{s.port:<6} {state:<23} {pid}")
    if status.run_id:
        typer.echo(f"run: {status.run_id}")


@shop_app.command("start")
def start(frontend_port: int = _port("frontend"), cart_port: int = _port("cart"),
          payment_port: int = _port("payment")) -> None:
    """Start the three services (detached); spans go to the Collector at OTEL_HOST:OTLP_HTTP_PORT."""
    from obslab.lab import Lab

    shop = _shop(frontend=frontend_port, cart=cart_port, payment=payment_port)
    _print(shop.start(Lab(shop.settings).store))


@shop_app.command("stop")
def stop() -> None:
    """Stop the three services; no process is left."""
    typer.echo(_shop().stop())


@shop_app.command("status")
def status(as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """Each service's PID and whether it answers. Exit code 1 unless all three answer."""
    report = _shop().status()
    if as_json:
        typer.echo(json.dumps({"running": report.running, "run_id": report.run_id, "message": report.message,
                               "services": [vars(s) for s in report.services]}))
    else:
        _print(report)
    raise typer.Exit(code=0 if report.running else 1)


@shop_app.command("fault")
def fault(service: str = typer.Argument(..., help=SERVICE_HELP), kind: str = typer.Argument(..., help=KIND_HELP),
          seconds: float = typer.Option(60.0, "--seconds", help="how long the fault lasts"),
          size: float = typer.Option(None, "--size", help="latency_spike: latency multiplier; error_surge: share of "
                                     "requests that fail (500); endpoint_outage: share that fail (503); default: "
                                     "the type's default in a scenario"),
          endpoint: str = typer.Option(None, "--endpoint", help="only this route of the service, e.g. /payment/charge")
          ) -> None:
    """Switch a fault on a service; its ground truth goes to the store's injected_incidents."""
    from obslab.lab import Lab
    from obslab.shop.faults import clear, switch_on

    shop = _shop()
    store = Lab(shop.settings).store
    if kind == CLEAR:
        ended = clear(shop.flags, store, service)
        typer.echo(f"ended {', '.join(f.fault_id for f in ended)}" if ended else f"no fault runs on {service}")
        return
    switched = switch_on(shop.flags, store, service, kind, seconds, size, endpoint)
    where = f"{service} {endpoint}" if endpoint else service
    typer.echo(f"{switched.fault_id}: {kind} x{switched.magnitude:g} on {where} until {switched.end:%H:%M:%S} UTC")


@shop_app.command("load")
def load(users: int = typer.Option(2, "--users", help="concurrent Locust users"),
         rate: float = typer.Option(5.0, "--rate", help="requests a second, all users together"),
         seconds: float = typer.Option(60.0, "--seconds", help="how long the load runs")) -> None:
    """Put load on the running shop with Locust (headless): /browse and /checkout at a set rate."""
    result = _shop().load(users, rate, seconds)
    for name, count in sorted(result.requests.items()):
        typer.echo(f"  {name:<12} {count:>8} requests {result.failures.get(name, 0):>8} failed")
    typer.echo(f"{result.total} requests, {result.failed} failed")
