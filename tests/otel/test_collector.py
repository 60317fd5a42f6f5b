"""The lab's OpenTelemetry Collector (obslab.otel.collector): its pinned manifest, its config, the
cached build, and the real binary taking spans from the OpenTelemetry SDK to the real broker."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time

import psutil
import pytest
import requests
import yaml
from kafka import TopicPartition
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind

from conftest import free_port
from obslab.broker import LocalBroker, consumer
from obslab.errors import MissingDependencyError, PortInUseError
from obslab.processes import process_alive
from obslab.otel import collector
from obslab.otel.collector import CONFIG, LocalCollector, binary_path, build, build_dir, collector_env, go_env
from obslab.settings import Settings, load_settings

WAIT_S = 120  # a bound for spans to reach Kafka on a busy machine, not a measurement
SERVICES = ("checkout", "payments", "search")
REQUESTS_PER_SERVICE = 10  # each a SERVER span with one CLIENT child
OTLP_KIND = {SpanKind.SERVER: 2, SpanKind.CLIENT: 3}  # OTLP's SpanKind enum, as otlp_json writes it
ENV_REF = re.compile(r"\$\{env:([A-Z_]+)(?::-([^}]*))?\}")  # ${env:NAME} or ${env:NAME:-default}


def _config() -> dict:
    return yaml.safe_load(CONFIG.read_text())


def _ports() -> tuple[int, int]:
    grpc, http = free_port(), free_port()
    while http == grpc:
        http = free_port()
    return grpc, http


# ---------------------------------------------------------------------- the config template

@pytest.mark.parametrize("protocol, endpoint", [
    ("grpc", "${env:OTEL_HOST:-127.0.0.1}:${env:OTLP_GRPC_PORT:-4317}"),  # OTEL_HOST, else loopback
    ("http", "${env:OTEL_HOST:-127.0.0.1}:${env:OTLP_HTTP_PORT:-4318}"),
])
def test_each_receiver_listens_on_otel_host_which_defaults_to_loopback(protocol, endpoint):
    assert _config()["receivers"]["otlp"]["protocols"][protocol]["endpoint"] == endpoint


def test_nothing_in_the_config_listens_anywhere_else():
    config = _config()
    assert "0.0.0.0" not in yaml.safe_dump(config) and "localhost" not in yaml.safe_dump(config)
    assert set(config["receivers"]) == {"otlp"} and set(config["receivers"]["otlp"]["protocols"]) == {"grpc", "http"}
    assert "extensions" not in config and "extensions" not in config["service"]  # no health or zpages server
    assert config["service"]["telemetry"]["metrics"] == {"level": "none"}  # no metrics endpoint of its own


def test_spans_go_batched_to_the_spans_topic_as_otlp_json():
    config = _config()
    kafka = config["exporters"]["kafka"]
    assert kafka["traces"] == {"topic": "${env:TOPIC_OTLP_SPANS:-otlp_spans}", "encoding": "otlp_json"}
    assert kafka["brokers"] == "${env:KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:9092}"
    assert kafka["producer"] == {"required_acks": "all"}  # idempotent: a retried produce writes no span twice
    assert config["service"]["pipelines"] == {"traces": {"receivers": ["otlp"], "processors": ["batch"],
                                                         "exporters": ["kafka"]}}


def test_every_variable_the_config_reads_is_a_setting_given_to_the_collector_with_its_default():
    referenced = {name: default for name, default in ENV_REF.findall(CONFIG.read_text())}
    # The settings at their defaults, whatever the environment says (the brokers derive from host and port).
    names = ("otel_host", "otlp_grpc_port", "otlp_http_port", "kafka_host", "kafka_port", "topic_otlp_spans")
    defaults = load_settings(**{n: Settings.model_fields[n].default for n in names}, kafka_bootstrap_servers="")
    assert referenced == collector_env(defaults)  # the same names, and the file's defaults are the settings'


@pytest.mark.parametrize("servers, given", [
    ("127.0.0.1:9092", "127.0.0.1:9092"),
    ("a:9092, b:9092", "a:9092,b:9092"),  # the Collector splits at commas and would keep the space
    ("a:9092,b:9092,", "a:9092,b:9092"),  # no empty broker
])
def test_the_brokers_reach_the_collector_as_a_comma_separated_list(tmp_path, servers, given):
    settings = load_settings(data_dir=tmp_path, kafka_bootstrap_servers=servers)
    assert collector_env(settings)["KAFKA_BOOTSTRAP_SERVERS"] == given


# ---------------------------------------------------------------------- the manifest and the build

def test_the_manifest_pins_one_collector_release():
    manifest = collector.manifest()
    modules = [m["gomod"] for kind in ("receivers", "processors", "exporters", "providers") for m in manifest[kind]]
    versions = {module.split()[0]: module.split()[1] for module in modules}
    release = collector.BUILDER_VERSION.rsplit(".", 1)[0]  # v0.165
    components = {m: v for m, v in versions.items() if "/confmap/provider/" not in m}
    providers = {m: v for m, v in versions.items() if "/confmap/provider/" in m}
    # core and contrib: the builder's release, contrib may be a patch ahead (v0.165.1)
    assert all(v.rsplit(".", 1)[0] == release for v in components.values()), components
    assert all(not m.startswith("go.opentelemetry.io/collector/") or v == collector.BUILDER_VERSION
               for m, v in components.items()), components
    assert len(set(providers.values())) == 1 and set(providers) >= {  # the stable providers of that release
        "go.opentelemetry.io/collector/confmap/provider/fileprovider",
        "go.opentelemetry.io/collector/confmap/provider/envprovider"}
    assert manifest["dist"]["version"] == collector.BUILDER_VERSION.lstrip("v")
    for component in ("otlpreceiver", "batchprocessor", "kafkaexporter"):  # what config.yaml uses
        assert any(m.endswith(f"/{component}") for m in versions), component


def test_the_binary_is_named_by_the_manifest_in_a_folder_keyed_on_it(tmp_path, monkeypatch):
    settings = load_settings(data_dir=tmp_path, cache_dir=tmp_path / "cache")
    dist = collector.manifest()["dist"]
    assert binary_path(settings) == build_dir(settings) / dist["output_path"] / dist["name"]
    assert build_dir(settings).parent == tmp_path / "cache" / "otelcol"
    edited = tmp_path / "builder.yaml"
    edited.write_text(collector.MANIFEST.read_text() + "\n# an edit\n")
    before = build_dir(settings)
    monkeypatch.setattr(collector, "MANIFEST", edited)
    assert build_dir(settings) != before  # an edited manifest is a new build


def test_a_built_collector_is_returned_without_go(tmp_path, monkeypatch):
    settings = load_settings(data_dir=tmp_path, cache_dir=tmp_path / "cache")
    binary = binary_path(settings)
    binary.parent.mkdir(parents=True)
    binary.write_bytes(b"built")
    (build_dir(settings) / collector.BUILT_STAMP).write_text("v0.165.0\n")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no go: a build would fail
    assert build(settings) == binary and binary.read_bytes() == b"built"


def test_a_build_without_go_says_what_to_install(tmp_path, monkeypatch):
    settings = load_settings(data_dir=tmp_path, cache_dir=tmp_path / "cache")
    binary_path(settings).parent.mkdir(parents=True)
    binary_path(settings).write_bytes(b"half")  # no stamp: a build that stopped half-way
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(MissingDependencyError, match=r"`go` is not on PATH.*Install Go 1\.26"):
        build(settings)


def test_go_keeps_its_caches_under_the_cache_dir_and_deletable(tmp_path, monkeypatch):
    monkeypatch.setenv("GOFLAGS", "-buildvcs=false")
    env = go_env(load_settings(data_dir=tmp_path, cache_dir=tmp_path / "cache"))
    for name in ("GOPATH", "GOMODCACHE", "GOCACHE"):
        assert env[name].startswith(str(tmp_path / "cache" / "go")), name
    assert env["GOFLAGS"] == "-buildvcs=false -modcacherw"  # the user's flags kept


# ---------------------------------------------------------------------- the process

@pytest.mark.parametrize("taken, setting", [("otlp_grpc_port", "OTLP_GRPC_PORT"), ("otlp_http_port", "OTLP_HTTP_PORT")])
def test_a_taken_port_is_a_clear_error_naming_it(tmp_path, taken, setting):
    grpc, http = _ports()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        settings = load_settings(data_dir=tmp_path, **{"otlp_grpc_port": grpc, "otlp_http_port": http, taken: port})
        with pytest.raises(PortInUseError, match=f"port {port}.*{setting}=<port>"):
            LocalCollector(settings).start()
    assert not (tmp_path / "otelcol" / "otelcol.pid").exists()  # nothing was started


def test_starting_an_unbuilt_collector_says_to_build_it(tmp_path):
    grpc, http = _ports()
    settings = load_settings(data_dir=tmp_path, cache_dir=tmp_path / "cache", otlp_grpc_port=grpc, otlp_http_port=http)
    with pytest.raises(MissingDependencyError, match="make otelcol"):
        LocalCollector(settings).start()


def test_status_and_stop_of_a_stopped_collector(tmp_path):
    lab = LocalCollector(load_settings(data_dir=tmp_path))
    status = lab.status()
    assert not status.running and status.pid is None and status.message == "Collector is not running"
    assert status.otlp_http == "http://127.0.0.1:4318" and status.otlp_grpc == "127.0.0.1:4317"
    assert lab.stop() == "Collector is not running"


def test_the_pid_file_counts_only_for_a_process_running_the_lab_s_config(tmp_path):
    lab = LocalCollector(load_settings(data_dir=tmp_path))
    lab.dir.mkdir(parents=True)
    sleep = "import sys, time; time.sleep(600)"
    ours = subprocess.Popen([sys.executable, "-c", sleep, "--config", f"file:{CONFIG}"])
    other = subprocess.Popen([sys.executable, "-c", sleep, "--config", "file:/elsewhere.yaml"])
    try:
        lab.pid_file.write_text(f"{ours.pid}\n")
        assert lab.pid() == ours.pid
        lab.pid_file.write_text(f"{other.pid}\n")
        assert lab.pid() is None  # a PID reused by an unrelated process
    finally:
        for proc in (ours, other):
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------------- the real Collector and broker

def _collector_lab(lab_settings: Settings, data_dir, topic: str) -> Settings:
    """The shared broker's settings with a Collector of its own: data folder (pid file, log), OTLP ports, topic."""
    grpc, http = _ports()
    return lab_settings.model_copy(update={"data_dir": data_dir, "otlp_grpc_port": grpc, "otlp_http_port": http,
                                           "topic_otlp_spans": topic})


def exporting_provider(settings: Settings, service: str) -> TracerProvider:
    """A tracer provider of `service` that batches its spans to the Collector over OTLP/HTTP."""
    session = requests.Session()
    session.trust_env = False  # a proxy in the environment must not carry loopback traffic
    exporter = OTLPSpanExporter(endpoint=f"{collector.otlp_http_endpoint(settings)}/v1/traces", session=session)
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def _send_spans(settings: Settings) -> dict[str, tuple[str, int]]:
    """Spans of a few services through the SDK's OTLP/HTTP exporter; span id (hex) -> (service, OTLP kind)."""
    sent: dict[str, tuple[str, int]] = {}
    for service in SERVICES:
        provider = exporting_provider(settings, service)
        tracer = provider.get_tracer("obslab-tests")
        for i in range(REQUESTS_PER_SERVICE):
            with tracer.start_as_current_span(f"GET /{service}/{i}", kind=SpanKind.SERVER) as server:
                with tracer.start_as_current_span(f"call {i}", kind=SpanKind.CLIENT) as client:
                    pass
            for span, kind in ((server, SpanKind.SERVER), (client, SpanKind.CLIENT)):
                sent[format(span.get_span_context().span_id, "016x")] = (service, OTLP_KIND[kind])
        assert provider.force_flush(timeout_millis=WAIT_S * 1000)  # the Collector took them (HTTP 200)
        provider.shutdown()
    return sent


def _received(settings: Settings, expected: int) -> list[tuple[str, str, int]]:
    """(span id, service, kind) of every span on the topic: read until `expected` are there, then to its end."""
    reader = consumer(settings)
    try:
        parts = [TopicPartition(settings.topic_otlp_spans, p) for p in range(settings.kafka_partitions)]
        reader.assign(parts)
        spans: list[tuple[str, str, int]] = []
        deadline = time.monotonic() + WAIT_S
        while True:
            for records in reader.poll(timeout_ms=500).values():
                for record in records:
                    spans += _spans_of(json.loads(record.value))
            if len(spans) >= expected:
                ends = reader.end_offsets(parts)
                if all(reader.position(p) >= end for p, end in ends.items()):  # and nothing more behind them
                    return spans
            if time.monotonic() > deadline:
                pytest.fail(f"{len(spans)} of {expected} spans reached {settings.topic_otlp_spans} within {WAIT_S} s")
    finally:
        reader.close()


def _spans_of(request: dict) -> list[tuple[str, str, int]]:
    """(span id, service, kind) of each span in one OTLP JSON ExportTraceServiceRequest."""
    found = []
    for resource_spans in request["resourceSpans"]:
        attributes = {a["key"]: a["value"] for a in resource_spans["resource"]["attributes"]}
        service = attributes["service.name"]["stringValue"]
        for scope_spans in resource_spans["scopeSpans"]:
            found += [(span["spanId"], service, span["kind"]) for span in scope_spans["spans"]]
    return found


def _wait_for_line(lab: LocalCollector, text: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while text not in lab.log_file.read_text(errors="replace"):
        if time.monotonic() > deadline:
            pytest.fail(f"no {text!r} in {lab.log_file} within {WAIT_S} s")
        time.sleep(0.2)


def _listening(pid: int) -> set[tuple[str, int]]:
    return {(c.laddr.ip, c.laddr.port) for c in psutil.Process(pid).net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN}


@pytest.mark.kafka
@pytest.mark.slow
def test_every_span_sent_reaches_the_topic_once_as_otlp_json_and_the_collector_listens_on_loopback_only(
        broker, lab_settings, tmp_path):
    settings = _collector_lab(lab_settings, tmp_path, "otelcol_test_spans")
    LocalBroker(settings).ensure_topics()
    lab = LocalCollector(settings, binary=build(settings))  # cached after `make otelcol`
    started = lab.start()
    try:
        assert started.running and lab.status().message == f"Collector running (PID {started.pid})"
        ports = {settings.otlp_grpc_port, settings.otlp_http_port}
        assert _listening(started.pid) == {("127.0.0.1", port) for port in ports}  # nothing else, nowhere else
        sent = _send_spans(settings)
        received = _received(settings, len(sent))
    finally:
        stopped = lab.stop()
    assert stopped == f"Collector (PID {started.pid}) stopped"
    assert len(sent) == len(SERVICES) * REQUESTS_PER_SERVICE * 2
    ids = [span_id for span_id, _, _ in received]
    assert sorted(ids) == sorted(sent)  # every span, once each
    assert {span_id: (service, kind) for span_id, service, kind in received} == sent  # with its service and kind
    assert lab.pid() is None and not process_alive(started.pid)  # a zombie, exited but not reaped yet, runs nothing


@pytest.mark.kafka
@pytest.mark.slow
def test_spans_wait_in_the_collector_until_their_topic_exists(broker, lab_settings, tmp_path):
    settings = _collector_lab(lab_settings, tmp_path, "otelcol_test_late_topic")
    lab = LocalCollector(settings, binary=build(settings))
    lab.start()
    try:
        sent = _send_spans(settings)  # taken, though the broker has no such topic and creates none
        _wait_for_line(lab, "UNKNOWN_TOPIC_OR_PARTITION")  # the exporter tried, failed and holds them
        LocalBroker(settings).ensure_topics()
        received = _received(settings, len(sent))  # the exporter's retries deliver them
    finally:
        lab.stop()
    assert sorted(span_id for span_id, _, _ in received) == sorted(sent)
