import os
import subprocess
import sys

import pytest

from obslab.processes import process_alive


def _sleeper(*args: str) -> subprocess.Popen:
    """A child that runs until killed; `args` end up on its command line."""
    return subprocess.Popen([sys.executable, "-c", "import sys, time; time.sleep(600)", *args])


def test_a_running_process_is_alive_and_an_exited_child_is_not_and_is_reaped():
    child = _sleeper()
    try:
        assert process_alive(child.pid)  # running
        child.kill()
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped: a zombie
        assert not process_alive(child.pid)  # a zombie does not count as running
        with pytest.raises(ChildProcessError):
            os.waitpid(child.pid, os.WNOHANG)  # process_alive reaped it
    finally:
        child.kill()
