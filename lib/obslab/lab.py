"""One place builds what the lab's steps talk to: `Lab(settings)`.

    Lab(settings)
      .settings   every parameter (obslab.settings)
      .store      the DuckDB store at DUCKDB_PATH, migrated once, on first use
      .spark      a Spark session, started on first use (15-20 s), stopped by close()
      .feeds      one Kafka producer for the two feed topics (obslab.feeds), connected on first message
      .narrator   the narrator backend NARRATOR_BACKEND chooses, and `narrator_choice` says why
      .events     the sink the generator publishes events to (Kafka, with KAFKA_CLIENT's client)

Steps take the parts they use as parameters (`run_detection(lab.store, lab.settings)`,
`run_stream_job(lab.settings, spark=lab.spark, store=lab.store, feeds=lab.feeds)`, ...); the CLI,
the notebooks, the DAG tasks, the dashboard and the demo build a Lab and hand its parts on. A part
given to the constructor (a test's shared Spark session, its own store) is used as it is and is not
closed by close(); swapping a backend stays a settings change.
"""

from __future__ import annotations

from functools import cached_property

from obslab.settings import Settings, get_settings


class Lab:
    """The resources of one lab, built lazily from its settings (see the module docstring)."""

    def __init__(self, settings: Settings | None = None, *, store=None, spark=None, feeds=None, narrator=None,
                 events=None):
        self.settings = settings or get_settings()
        given = {"store": store, "spark": spark, "feeds": feeds, "events": events,
                 "_narrator": None if narrator is None else (narrator, f"{narrator.name} (given)")}
        for name, part in given.items():
            if part is not None:
                self.__dict__[name] = part  # cached_property reads the instance dict first
        self._owned: list[str] = []  # parts this Lab built, so close() releases them

    @cached_property
    def store(self):
        from obslab.store import Store

        store = Store.from_settings(self.settings)
        store.migrate()  # the one migration a process runs; steps expect a current store
        return store

    @cached_property
    def spark(self):
        from obslab.stream.session import build_session

        self._owned.append("spark")
        return build_session(self.settings)

    @cached_property
    def feeds(self):
        from obslab.feeds import Feeds

        self._owned.append("feeds")
        return Feeds(self.settings)

    @cached_property
    def _narrator(self):
        """(backend, why): the one NARRATOR_BACKEND chooses, or the one given."""
        from obslab.narrate.backends import make_backend

        return make_backend(self.settings)

    @property
    def narrator(self):
        """The narrator backend (template, llama.cpp or Ollama)."""
        return self._narrator[0]

    @property
    def narrator_choice(self) -> str:
        """Why that backend (e.g. `auto: llamacpp, the embedded model is cached`)."""
        return self._narrator[1]

    @cached_property
    def events(self):
        from obslab.generator.sinks import kafka_sink

        self._owned.append("events")
        return kafka_sink(self.settings)

    def close(self) -> None:
        """Release what this Lab built: the feed and event producers, the Spark session."""
        for name in reversed(self._owned):
            part = self.__dict__.pop(name, None)
            if part is None:
                continue
            if name == "spark":
                part.stop()
            else:
                part.close()
        self._owned.clear()

    def __enter__(self) -> "Lab":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
