"""`Lab`: the one place that builds what the steps use. Its store is migrated once and shared, parts
given to it are used as they are and left open, and close() releases only what it built."""

from obslab.lab import Lab
from obslab.narrate.backends import TemplateBackend
from obslab.settings import load_settings
from obslab.store import MIGRATIONS, Store


def test_the_store_is_created_migrated_once_and_shared(tmp_path):
    lab = Lab(load_settings(data_dir=tmp_path))
    assert not lab.settings.duckdb_path.exists()  # nothing is built before a step asks for it
    store = lab.store
    assert store is lab.store  # one object for every step of the process
    assert store.schema_version() == max(version for version, _, _ in MIGRATIONS)
    assert store.path == tmp_path / "observability.duckdb"


def test_parts_given_are_used_and_not_closed(tmp_path):
    class Part:
        closed = False

        def close(self) -> None:
            self.closed = True

    store, feeds = Store(tmp_path / "own.duckdb"), Part()
    with Lab(load_settings(data_dir=tmp_path), store=store, feeds=feeds) as lab:
        assert lab.store is store and lab.feeds is feeds
    assert not feeds.closed  # the test that made it decides when it goes
    assert not store.path.exists()  # a given store is taken as it is: not migrated behind its owner's back


def test_the_narrator_follows_the_setting(tmp_path):
    lab = Lab(load_settings(data_dir=tmp_path, narrator_backend="template"))
    assert isinstance(lab.narrator, TemplateBackend) and "template" in lab.narrator_choice
    given = TemplateBackend()
    assert Lab(load_settings(data_dir=tmp_path), narrator=given).narrator is given


def test_close_releases_what_it_built_and_a_closed_lab_builds_again(tmp_path):
    lab = Lab(load_settings(data_dir=tmp_path))
    feeds = lab.feeds
    lab.close()
    assert feeds._producer is None  # never connected (nothing was sent), and nothing is left to close
    assert lab.feeds is not feeds  # asked again after close: a new one
