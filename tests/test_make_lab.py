"""`make lab`: JupyterLab starts for any user (root included), on 127.0.0.1 only, behind a token."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from conftest import free_port

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_make_lab_serves_on_loopback_with_a_token(tmp_path):
    port = free_port()
    env = os.environ | {"JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTER_CONFIG_DIR": str(tmp_path / "config")}
    log = tmp_path / "lab.log"
    with log.open("w") as out:
        proc = subprocess.Popen(["make", "-s", "lab", f"LAB_PORT={port}"], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = None
        deadline = time.monotonic() + 120
        while url is None and time.monotonic() < deadline:
            assert proc.poll() is None, f"make lab exited with {proc.returncode}:\n{log.read_text()}"
            found = re.search(rf"http://127\.0\.0\.1:{port}/lab\?token=(\w+)", log.read_text())
            url = found and found.group(0)
            time.sleep(0.5)
        assert url, f"no URL with a token printed:\n{log.read_text()}"
        token = url.rsplit("=", 1)[1]

        def get(path: str, with_token: bool) -> tuple[int, str]:
            headers = {"Authorization": f"token {token}"} if with_token else {}
            request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    return response.status, response.read().decode()
            except urllib.error.HTTPError as err:
                return err.code, ""

        assert get("/api/kernelspecs", with_token=False)[0] == 403
        code, body = get("/api/kernelspecs", with_token=True)
        assert code == 200 and "obslab" in json.loads(body)["kernelspecs"], body
        # Every socket the server listens on is loopback.
        server = psutil.Process(proc.pid)
        listening = [c.laddr for p in [server, *server.children(recursive=True)]
                     for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
        assert listening and {a.ip for a in listening} <= {"127.0.0.1"}, listening
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
