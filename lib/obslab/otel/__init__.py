"""The lab's OpenTelemetry Collector: built from Go modules with ocb, run like the broker."""
