"""The SQL of the sink's merge (obslab.stream.merge) on a real DuckDB store, step by step; the sink's
tests (test_sink.py) hold the whole transaction, the ledger and the Kafka position."""

from datetime import datetime, timedelta, timezone

import pyarrow as pa

from obslab.lab import Lab
from obslab.settings import load_settings
from obslab.stream.merge import OTHER_ENDPOINT, add_partials, finalize, keep_endpoints, recompute

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)
MINUTE = timedelta(minutes=1)
NOW = datetime(2026, 3, 1, 10, 0, tzinfo=timezone.utc)
_STAMP = pa.timestamp("us", tz="UTC")
_PARTIALS = pa.schema([("service", pa.string()), ("endpoint", pa.string()), ("window_start", _STAMP),
                       ("window_end", _STAMP), ("bucket", pa.int32()), ("error_code", pa.int32()),
                       ("count", pa.int64()), ("errors", pa.int64()), ("latency_sum", pa.float64()),
                       ("max_event_time", _STAMP)])


def partials(rows) -> pa.Table:
    """(service, endpoint, minute after T0, bucket, error code or None, count, latency per event) -> partial rows."""
    return pa.Table.from_pylist([
        {"service": s, "endpoint": e, "window_start": T0 + m * MINUTE, "window_end": T0 + (m + 1) * MINUTE,
         "bucket": b, "error_code": code, "count": n, "errors": n if code else 0, "latency_sum": n * latency,
         "max_event_time": T0 + m * MINUTE + timedelta(seconds=30)} for s, e, m, b, code, n, latency in rows],
        schema=_PARTIALS)


def store(tmp_path):
    return Lab(load_settings(data_dir=tmp_path)).store


def merged(con, table, now=NOW):
    """add_partials and recompute of `table`, as the sink runs them (every name kept)."""
    con.register("p", table)
    add_partials(con, "p", now)
    con.execute("CREATE OR REPLACE TEMP TABLE touched AS SELECT DISTINCT service, endpoint, window_start FROM p")
    con.unregister("p")
    recompute(con, "touched", now)


def test_names_already_kept_merge_as_they_are(tmp_path):
    with store(tmp_path).writer() as con:
        assert keep_endpoints(con, "p", {("checkout", "/cart")}, {("checkout", "/cart"), ("search", "/q")}, 1,
                              NOW) == ("p", 0, None)
        assert con.execute("SELECT count(*) FROM stream_endpoints").fetchall() == [(0,)]  # nothing written


def test_new_names_are_kept_busiest_first_up_to_the_cap_and_the_rest_count_as_other(tmp_path):
    table = partials([("checkout", "/b", 0, 250, None, 5, 10.0), ("checkout", "/a", 0, 250, None, 5, 10.0),
                      ("checkout", "/c", 0, 250, 500, 9, 10.0), ("checkout", "/d", 0, 250, None, 2, 10.0),
                      ("search", "/q", 0, 250, None, 1, 10.0)])
    with store(tmp_path).writer() as con:
        con.register("p", table)
        names = {("checkout", e) for e in "/a /b /c /d".split()} | {("search", "/q")}
        relation, overflow, kept = keep_endpoints(con, "p", names, set(), 2, NOW)
        # /c (9 events) first; /a and /b tie at 5 and /a wins by name; /b (5) and /d (2) fold into `other`
        assert kept == {("checkout", "/c"), ("checkout", "/a"), ("search", "/q")}
        assert overflow == 7
        rows = con.execute(f"SELECT endpoint, sum(count)::INT FROM {relation} WHERE service = 'checkout' "
                           "GROUP BY ALL ORDER BY 1").fetchall()
        assert rows == [("/a", 5), ("/c", 9), (OTHER_ENDPOINT, 7)]


def test_partials_add_up_and_the_windows_are_recomputed(tmp_path):
    with store(tmp_path).writer() as con:
        # /cart: 3 good at 10 ms and 1 failed at 30 ms; /pay: 2 good at 20 ms; then /cart 4 more good at 10 ms
        merged(con, partials([("checkout", "/cart", 0, 116, None, 3, 10.0), ("checkout", "/cart", 0, 171, 503, 1, 30.0),
                              ("checkout", "/pay", 0, 151, None, 2, 20.0)]))
        merged(con, partials([("checkout", "/cart", 0, 116, None, 4, 10.0)]))
        cart = con.execute("SELECT request_count, error_count, error_rate, avg_latency_ms, p50_latency_ms, "
                           "p99_latency_ms FROM endpoint_metrics WHERE endpoint = '/cart'").fetchall()[0]
        assert cart[:4] == (8, 1, 1 / 8, 100.0 / 8)  # 7 at 10 ms and 1 at 30 ms: 100 ms in all
        assert 1.02 ** 116 < cart[4] <= 1.02 ** 117  # the median is in bucket 116 (10 ms)
        assert 1.02 ** 171 < cart[5] <= 1.02 ** 172  # the 99th percentile is the one failure's bucket (30 ms)
        service = con.execute("SELECT request_count, error_count, error_rate, avg_latency_ms FROM service_metrics "
                              "WHERE service = 'checkout'").fetchall()
        assert service == [(10, 1, 1 / 10, 140.0 / 10)]  # both endpoints: 100 + 2 x 20 ms
        statuses = con.execute("SELECT endpoint, status_code, count FROM status_counts").fetchall()
        assert statuses == [("/cart", 503, 1)]


def test_finalize_closes_the_windows_the_watermark_passed_and_drops_their_histograms(tmp_path):
    with store(tmp_path).writer() as con:
        merged(con, partials([("checkout", "/cart", m, 116, None, 1, 10.0) for m in range(3)]))  # 09:00-09:03
        assert [r["is_final"] for r in finalize(con, None, 60, NOW)] == [False] * 3  # no watermark: all open
        later = NOW + MINUTE
        changed = finalize(con, T0 + 2 * MINUTE, 60, later)  # the windows ending 09:01 and 09:02 are final
        assert [(r["window_start"], r["is_final"]) for r in changed] == [(T0, True), (T0 + MINUTE, True)]
        assert con.execute("SELECT window_start, is_final FROM endpoint_metrics ORDER BY 1").fetchall() == [
            (T0, True), (T0 + MINUTE, True), (T0 + 2 * MINUTE, False)]
        assert con.execute("SELECT DISTINCT window_start FROM latency_histograms").fetchall() == [(T0 + 2 * MINUTE,)]
