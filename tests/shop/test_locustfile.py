"""The Locust script: Locust finds its user; an ordinary import leaves the process unpatched."""

import subprocess
import sys

from obslab.shop.locustfile import DEFAULT_USER_RATE
from obslab.shop.run import LOCUSTFILE

BOUND_S = 120  # for Locust's start on a busy machine, not a measurement


def test_an_ordinary_import_defines_no_user_and_does_not_load_locust():
    # In a fresh interpreter: Locust's gevent patching would change the whole process.
    code = "import sys, obslab.shop.locustfile as f; print('locust' in sys.modules, hasattr(f, 'Shopper'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=BOUND_S, check=True)
    assert out.stdout.split() == ["False", "False"]
    assert DEFAULT_USER_RATE > 0


def test_locust_finds_the_shopper_in_the_script(tmp_path):
    out = subprocess.run([sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--list"], capture_output=True,
                         text=True, timeout=BOUND_S, cwd=tmp_path, check=True)
    assert "Shopper" in out.stdout
