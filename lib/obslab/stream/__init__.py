"""Spark Structured Streaming: session, transform, sink, job runner."""
