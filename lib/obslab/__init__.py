"""obslab: a notebook-first, reproducible lab for streaming observability."""

__version__ = "0.1.0"
