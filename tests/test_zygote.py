"""obslab.zygote: children forked on request, with the asker's stdio, folder and environment; refused
requests answered; children and the zygote end with what they watch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from obslab.zygote import ZygoteError, ask, running, wait_for

ROOT = Path(__file__).resolve().parents[1]

# The child prints what it sees, then sleeps `sleep` seconds (so a test can watch it end with its asker).
ZYGOTE = """
import json, os, sys, time
from pathlib import Path
from obslab.zygote import serve

def become(request):
    print(json.dumps({"pid": os.getpid(), "ppid": os.getppid(), "cwd": os.getcwd(), "mark": os.environ.get("MARK"),
                      "sid": os.getsid(0), "stdin": sys.stdin.readline().strip(), "path": sys.path}), flush=True)
    time.sleep(request.get("sleep", 0))

def check(request):
    if request.get("refuse"):
        raise ValueError("refused on purpose")

watch = int(sys.argv[2]) if len(sys.argv) > 2 else None
serve(Path(sys.argv[1]), become, watch=watch, name="test-zygote", check=check)
"""


def _wait(check, timeout_s: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def _start(tmp_path: Path, *extra: str) -> tuple[Path, subprocess.Popen]:
    path = tmp_path / "z.sock"
    log = (tmp_path / "zygote.log").open("w")
    proc = subprocess.Popen([sys.executable, "-c", ZYGOTE, str(path), *extra], stdout=log, stderr=subprocess.STDOUT,
                            cwd=ROOT)
    _wait(lambda: path.exists() or proc.poll() is not None, what="the zygote's socket")
    assert proc.poll() is None, (tmp_path / "zygote.log").read_text()
    return path, proc


@pytest.fixture
def zygote(tmp_path):
    path, proc = _start(tmp_path)
    yield path, proc
    proc.terminate()
    proc.wait(timeout=30)


def test_a_child_gets_the_askers_stdio_folder_and_environment(zygote, tmp_path):
    path, proc = zygote
    stdin_r, stdin_w = os.pipe()
    out_r, out_w = os.pipe()
    os.write(stdin_w, b"hello from the asker\n")
    env = {**os.environ, "MARK": "mine", "PYTHONPATH": str(tmp_path / "mine")}
    pid = ask(path, {"cwd": str(tmp_path), "env": env}, fds=[stdin_r, out_w, out_w])
    os.close(stdin_r)
    os.close(out_w)
    with os.fdopen(out_r) as out:
        seen = json.loads(out.readline())
    os.close(stdin_w)
    assert seen["pid"] == pid and seen["ppid"] == proc.pid  # forked by the zygote
    assert seen["cwd"] == str(tmp_path) and seen["mark"] == "mine" and seen["stdin"] == "hello from the asker"
    assert seen["sid"] == pid  # its own session
    assert seen["path"][0] == str(tmp_path / "mine")  # the asker's PYTHONPATH, as a new interpreter would
    wait_for(pid)
    assert not running(pid)


def test_a_child_ends_when_its_asker_is_gone(zygote, tmp_path):
    path, _ = zygote
    code = ("import sys; from pathlib import Path; from obslab.zygote import ask; "
            "print(ask(Path(sys.argv[1]), {'sleep': 600}))")
    asked = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, cwd=ROOT,
                           timeout=60)
    assert asked.returncode == 0, asked.stderr
    pid = int(asked.stdout)
    _wait(lambda: not running(pid), what=f"child {pid} to end after its asker")


def test_refused_and_malformed_requests_are_answered_and_the_zygote_goes_on(zygote, tmp_path):
    path, proc = zygote
    with pytest.raises(ZygoteError, match="refused on purpose"):
        ask(path, {"refuse": True})
    r, w = os.pipe()
    with pytest.raises(ZygoteError, match="three"):
        ask(path, {}, fds=[r])
    os.close(r)
    os.close(w)
    for payload in (b"[1, 2]\n", b"not json\n", b'{"env": "x"}\n'):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(10)
            conn.connect(str(path))
            conn.sendall(payload)
            assert "bad request" in json.loads(conn.recv(4096))["error"]
    assert proc.poll() is None
    assert oct(path.stat().st_mode & 0o777) == "0o600"  # only this user may ask
    pid = ask(path, {"cwd": str(tmp_path)})
    wait_for(pid)


def test_asking_where_no_zygote_listens_says_where_it_looked(tmp_path):
    with pytest.raises(ZygoteError, match="nobody.sock"):
        ask(tmp_path / "nobody.sock", {})


def test_the_zygote_ends_with_the_process_it_watches(tmp_path):
    watched = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    path, proc = _start(tmp_path, str(watched.pid))
    try:
        watched.kill()
        watched.wait(timeout=10)
        proc.wait(timeout=60)
        assert not path.exists()  # it removed its socket on the way out
    finally:
        if proc.poll() is None:
            proc.kill()
