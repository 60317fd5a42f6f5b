"""What the benchmarks share: an isolated lab on free ports with its own broker, the machine they ran
on, and process figures (CPU seconds, RSS, process trees) read with psutil.

The scripts import it as `common` (a script's own folder is on sys.path when it runs).
"""

from __future__ import annotations

import os
import platform
import signal
import socket
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import psutil

from obslab.broker import LocalBroker
from obslab.settings import Settings, load_settings

MIB = 1024 * 1024


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on right now (the same way as tests/conftest.py)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def isolated_settings(data_dir: Path, **pinned) -> Settings:
    """Settings of a lab of its own: `data_dir`, a broker on two free ports, no external Kafka, and
    `pinned` values (anything that changes a measurement is pinned, never read from .env)."""
    port = free_port()
    controller = free_port()
    while controller == port:
        controller = free_port()
    return load_settings(data_dir=data_dir, kafka_port=port, kafka_controller_port=controller,
                         kafka_bootstrap_servers="", **pinned)


@contextmanager
def bench_broker(make_settings):
    """A real broker in a temporary data folder, from `make_settings(folder)`; always stopped."""
    # SIGTERM must unwind through the finally below, or the broker JVM (its own session) outlives us.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="obslab-bench-") as tmp:
        settings = make_settings(Path(tmp))
        broker = LocalBroker(settings)
        print(f"starting a broker on {settings.kafka_bootstrap_servers} (data in {tmp})", file=sys.stderr)
        try:
            broker.start()
            yield settings, broker
        finally:
            print(broker.stop(), file=sys.stderr)


def machine() -> dict:
    """CPU model, cores, RAM and software versions, as BENCHMARKS.md records them."""
    import confluent_kafka
    import kafka

    from obslab import bootstrap

    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                 platform.processor() or "unknown")
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 1024**3, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "kafka_python": kafka.__version__,
        "confluent_kafka": confluent_kafka.__version__,
        "librdkafka": confluent_kafka.libversion()[0],
        "kafka_broker": bootstrap.KAFKA_VERSION,
    }


# ---------------------------------------------------------------------------- processes


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (all its threads, not its children)."""
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine spent busy so far (user, nice, system, irq, softirq)."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq


def processes() -> dict[int, tuple[int, float, str]]:
    """pid -> (parent pid, CPU seconds so far, command name) of every process on the machine."""
    out = {}
    for proc in psutil.process_iter(["ppid", "cpu_times", "name"]):
        info = proc.info
        if info["cpu_times"] is None:  # exited meanwhile, or not ours to read
            continue
        out[proc.pid] = (info["ppid"], info["cpu_times"].user + info["cpu_times"].system, info["name"])
    return out


def tree(root: int | None, procs: dict[int, tuple[int, float, str]]) -> set[int]:
    """root and all its descendants in a process table from `processes()`."""
    if root is None or root not in procs:
        return set()
    children: dict[int, list[int]] = {}  # parent pid -> child pids
    for pid, (ppid, _, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = {root}, [root]
    while todo:
        for pid in children.get(todo.pop(), []):
            if pid not in found:
                found.add(pid)
                todo.append(pid)
    return found


def rss_mib(pid: int) -> float:
    """Resident memory of a process in MiB; 0 when it has exited."""
    try:
        return psutil.Process(pid).memory_info().rss / MIB
    except psutil.Error:
        return 0.0


def group_pids(pgid: int) -> set[int]:
    """The processes of a process group (what `pgrep -g` lists)."""
    out = set()
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid:
                out.add(proc.pid)
        except (OSError, psutil.Error):
            continue
    return out


def matching_pids(fragment: str) -> set[int]:
    """The processes whose command line contains `fragment` (what `pgrep -f` lists for a plain string)."""
    out = set()
    for proc in psutil.process_iter(["cmdline"]):
        if fragment in " ".join(proc.info["cmdline"] or ()):
            out.add(proc.pid)
    return out


def cmdline(pid: int, width: int = 70) -> str:
    """A short command line: the program and its first arguments, without leading options or a classpath."""
    try:
        words = psutil.Process(pid).cmdline()
    except psutil.Error:
        return ""
    if not words:
        return ""
    rest, skip = [], False
    for word in words[1:]:
        if skip:
            skip = False
        elif word in ("-cp", "-classpath"):
            skip = True
        elif not (word.startswith("-") and not rest):
            rest.append(word)
    return " ".join([Path(words[0]).name, *rest])[:width]
