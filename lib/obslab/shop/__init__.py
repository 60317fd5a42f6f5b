"""The shop: three small web services (frontend, cart, payment) that really serve HTTP, traced with
OpenTelemetry and exported over OTLP to the Collector, with a fault switch whose every flip is ground
truth in the store. `obslab shop --help` runs it."""
