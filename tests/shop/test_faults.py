"""The fault switch: the flag file the services read, and its ground truth in a real store."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from obslab.errors import ConfigError
from obslab.shop.faults import FaultSwitch, FlagFile, begin_run, clear, switch_on
from obslab.store import Store

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)


@pytest.fixture()
def store(store_path):
    store = Store(store_path)
    store.migrate()
    return store


@pytest.fixture()
def flags(tmp_path):
    return FlagFile(tmp_path / "shop" / "faults.json")


def _truth(store):
    return store.query("SELECT run_id, fault_id, scenario, fault_type, service, endpoint, start_time, end_time, "
                       "magnitude, benign, root_cause FROM injected_incidents ORDER BY fault_id")


def test_a_run_begins_with_no_faults_and_the_shop_in_the_catalogue(flags, store):
    run_id = begin_run(flags, store, NOW)
    assert run_id == "shop-20260105T090000Z"
    assert flags.read().faults == []
    calls = dict(store.query("SELECT service, calls FROM service_catalog WHERE scenario = 'shop'"))
    assert calls == {"frontend": "cart,payment", "cart": None, "payment": None}


def test_a_switch_is_a_ground_truth_row_like_the_generators(flags, store):
    begin_run(flags, store, NOW)
    fault = switch_on(flags, store, "payment", "error_surge", 120, size=0.4, now=NOW)
    assert fault.fault_id == "001-error_surge-payment"
    assert _truth(store) == [("shop-20260105T090000Z", "001-error_surge-payment", "shop", "error_surge", "payment",
                              None, NOW, NOW + timedelta(seconds=120), 0.4, False, "payment")]
    assert flags.read().faults == [fault]


def test_a_switch_without_a_size_takes_the_fault_types_default(flags, store):
    fault = switch_on(flags, store, "cart", "latency_spike", 60, now=NOW)
    assert fault.magnitude == 7.0  # the generator's default latency multiplier
    assert flags.read().run_id == "shop-20260105T090000Z"  # no run yet: the switch begins one


def test_clearing_ends_the_running_faults_now_in_the_file_and_the_store(flags, store):
    switch_on(flags, store, "payment", "endpoint_outage", 600, endpoint="/payment/charge", now=NOW)
    switch_on(flags, store, "cart", "error_surge", 600, now=NOW)
    later = NOW + timedelta(seconds=30)
    ended = clear(flags, store, "payment", now=later)
    assert [f.fault_id for f in ended] == ["001-endpoint_outage-payment"]
    assert [f.end for f in flags.read().faults] == [later, NOW + timedelta(seconds=600)]  # cart's goes on
    assert [row[7] for row in _truth(store)] == [later, NOW + timedelta(seconds=600)]
    assert _truth(store)[0][5] == "/payment/charge"


@pytest.mark.parametrize("service, kind, seconds, size, endpoint, says", [
    ("checkout", "error_surge", 60, None, None, "no service"),  # the generator's service, not the shop's
    ("payment", "traffic_drop", 60, None, None, "cannot play"),  # a type the shop has no way to make
    ("payment", "error_surge", 0, None, None, "more than 0 seconds"),
    ("payment", "error_surge", 60, 1.5, None, "at most 1"),  # a share above all requests
    ("payment", "latency_spike", 60, 1.0, None, "above 1"),  # x1 is no spike
    ("cart", "error_surge", 60, None, "/checkout", "no route"),  # a route of another service
])
def test_a_switch_that_cannot_be_played_is_refused_with_what_to_give(flags, store, service, kind, seconds, size,
                                                                     endpoint, says):
    with pytest.raises(ConfigError, match=says):
        switch_on(flags, store, service, kind, seconds, size, endpoint, now=NOW)
    assert flags.read() is None and _truth(store) == []


def test_a_service_sees_its_own_faults_while_they_run_and_rereads_the_file_when_it_changes(flags, store):
    switch = FaultSwitch(flags.path, "payment")
    assert switch.active(NOW) == []  # no file yet
    switch_on(flags, store, "payment", "error_surge", 60, now=NOW)
    switch_on(flags, store, "cart", "error_surge", 60, now=NOW)
    assert [f.service for f in switch.active(NOW)] == ["payment"]
    assert switch.active(NOW + timedelta(seconds=61)) == []  # over
    clear(flags, store, "payment", now=NOW + timedelta(seconds=10))
    assert switch.active(NOW + timedelta(seconds=20)) == []


def test_a_broken_flag_file_keeps_the_faults_read_before(flags, store):
    switch = FaultSwitch(flags.path, "payment")
    switch_on(flags, store, "payment", "error_surge", 60, now=NOW)
    assert len(switch.active(NOW)) == 1
    flags.path.write_text("{not json")
    assert len(switch.active(NOW)) == 1
