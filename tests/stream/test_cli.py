"""`obslab spark ...` (the server itself: tests/stream/test_server.py)."""

import json
import os
import subprocess
import sys


def _spark(tmp_path, *args):
    env = {**os.environ, "DATA_DIR": str(tmp_path)}
    return subprocess.run([sys.executable, "-m", "obslab.cli", "spark", *args], env=env, capture_output=True,
                          text=True, timeout=60)


def test_status_without_a_server_says_so_and_exits_1(tmp_path):
    out = _spark(tmp_path, "status")
    assert out.returncode == 1
    assert "not running" in out.stdout and "obslab spark start" in out.stdout


def test_status_json_names_the_address_a_server_would_have(tmp_path):
    out = _spark(tmp_path, "status", "--json")
    assert out.returncode == 1
    assert json.loads(out.stdout) == {"running": False, "pid": None, "url": "sc://127.0.0.1:15002",
                                      "message": json.loads(out.stdout)["message"]}


def test_stop_without_a_server_is_harmless(tmp_path):
    out = _spark(tmp_path, "stop")
    assert out.returncode == 0 and "not running" in out.stdout
