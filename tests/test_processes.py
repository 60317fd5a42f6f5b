import os
import subprocess
import sys

import pytest

from obslab.processes import group_alive, group_members, process_alive


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


def test_a_process_group_lists_its_members_and_is_alive_until_they_exit():
    leader = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    try:
        assert group_members(leader.pid) == [leader.pid]  # its own group, led by itself
        assert group_alive(leader.pid)
        leader.kill()
        os.waitid(os.P_PID, leader.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped: still listed, a zombie
        assert not group_alive(leader.pid)  # a zombie is not alive
    finally:
        leader.kill()
        leader.wait()
    assert group_members(leader.pid) == []  # reaped: nothing left in the group
