"""The feed topics: rows as JSON keyed by service, one producer made on the first message, and a real
broker that receives what was sent."""

import json
from datetime import datetime, timezone

import pytest

from conftest import free_port
from obslab.detect.incidents import Incident
from obslab.feeds import Feeds, message
from obslab.lab import Lab
from obslab.settings import load_settings

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)


def test_a_row_is_keyed_by_its_service_with_times_in_iso_8601():
    key, value = message({"service": "payments", "window_start": T0, "error_rate": 0.25, "endpoint": None})
    assert key == b"payments"
    assert json.loads(value) == {"service": "payments", "window_start": "2026-03-01T09:00:00+00:00",
                                 "error_rate": 0.25, "endpoint": None}


def test_nothing_to_send_never_reaches_for_a_broker(tmp_path):
    # Nobody listens on this port: a producer would fail to bootstrap. With no rows none is made.
    feeds = Feeds(load_settings(data_dir=tmp_path, kafka_bootstrap_servers=f"127.0.0.1:{free_port()}"))
    assert feeds.windows([]) == 0 and feeds.incidents([]) == 0
    assert feeds._producer is None
    feeds.close()  # and closing what was never opened is fine


@pytest.mark.kafka
def test_feeds_publish_windows_and_incidents_as_json_keyed_by_service(broker, lab_settings):
    from kafka import TopicPartition

    from obslab.broker import LocalBroker, consumer

    settings = lab_settings.model_copy(update={"topic_aggregated_metrics": "lab_feed_metrics",
                                               "topic_anomalies": "lab_feed_anomalies"})
    LocalBroker(settings).ensure_topics()
    window = {"service": "payments", "window_start": T0, "request_count": 120, "error_rate": 0.25}
    incident = Incident("inc-1", "payments", "errors", "open", T0, T0, None, "high", 2, "error_surge", "",
                        None, None, "")
    with Lab(settings) as lab:
        assert lab.feeds.windows([window]) == 1
        assert lab.feeds.incidents([incident]) == 1
        assert lab.feeds.windows([]) == 0
    c = consumer(settings, consumer_timeout_ms=10_000)
    got = {}
    for topic in (settings.topic_aggregated_metrics, settings.topic_anomalies):
        parts = [TopicPartition(topic, p) for p in range(settings.kafka_partitions)]
        c.assign(parts)
        c.seek_to_beginning(*parts)
        got[topic] = [(m.key.decode(), json.loads(m.value)) for m in c]
    c.close()
    assert got[settings.topic_aggregated_metrics] == [
        ("payments", {"service": "payments", "window_start": "2026-03-01T09:00:00+00:00", "request_count": 120,
                      "error_rate": 0.25})]
    [(key, value)] = got[settings.topic_anomalies]
    assert key == "payments" and value["incident_id"] == "inc-1" and value["opened_at"] == "2026-03-01T09:00:00+00:00"
