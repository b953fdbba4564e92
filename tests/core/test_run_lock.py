"""One training per run folder: a second one stops at once naming the folder and the owner; a lock of a
dead process or with an old heartbeat is taken over; the lock goes when training ends."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest
from conftest import run_module, tiny_overrides

from updown_vqa.core import lock as lock_module
from updown_vqa.core.errors import UpdownError
from updown_vqa.core.lock import RunLock


@pytest.fixture
def other_process():
    """A live process that is not this one."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield process.pid
    process.kill()
    process.wait()


def write_lock(folder, pid, heartbeat=None, host=None):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, ".lock"), "w") as f:
        json.dump({"pid": pid, "host": host or socket.gethostname(), "heartbeat": heartbeat or time.time()}, f)


def test_a_held_folder_is_refused_naming_it_the_owner_and_another_name(tmp_path, other_process):
    write_lock(tmp_path, other_process)
    with pytest.raises(UpdownError, match=rf"{tmp_path}: another training \(pid {other_process} on "
                                          rf"{socket.gethostname()}\) is using this run folder; .*name=OTHER"):
        RunLock(str(tmp_path)).acquire()


def test_the_lock_is_released_and_a_second_holder_refused_while_held(tmp_path):
    with RunLock(str(tmp_path)):
        owner = json.load(open(tmp_path / ".lock"))
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
        with pytest.raises(UpdownError, match="another training"):
            RunLock(str(tmp_path)).acquire()
    assert not (tmp_path / ".lock").exists()


def test_stale_locks_are_taken_over(tmp_path, other_process):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    write_lock(tmp_path, dead.pid)  # its process is gone on this host
    with RunLock(str(tmp_path)):
        assert json.load(open(tmp_path / ".lock"))["pid"] == os.getpid()
    write_lock(tmp_path, other_process, heartbeat=time.time() - 2 * lock_module.STALE_AFTER, host="elsewhere")
    with RunLock(str(tmp_path)):  # another host's lock whose heartbeat stopped (a requeued SLURM job)
        pass
    write_lock(tmp_path, other_process, host="elsewhere")
    with pytest.raises(UpdownError, match="on elsewhere"):  # a live heartbeat on another host is respected
        RunLock(str(tmp_path)).acquire()


def test_the_heartbeat_is_refreshed_while_held(tmp_path, monkeypatch):
    monkeypatch.setattr(lock_module, "HEARTBEAT", 0.05)
    with RunLock(str(tmp_path)):
        first = json.load(open(tmp_path / ".lock"))["heartbeat"]
        time.sleep(0.5)
        assert json.load(open(tmp_path / ".lock"))["heartbeat"] > first


@pytest.mark.slow
def test_a_second_training_of_a_held_run_folder_stops_before_writing_there(data_dir, tmp_path, other_process):
    run = tmp_path / "runs" / "busy"
    write_lock(run, other_process)
    result = run_module("updown_vqa.train", *tiny_overrides(data_dir, str(tmp_path)), "name=busy")
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert output.count("error: ") == 1 and "Traceback" not in output
    assert f"pid {other_process}" in output and "name=OTHER" in output
    assert sorted(os.listdir(run)) == [".lock"]  # the owner's .hydra/, metrics and checkpoints untouched


def test_the_holder_itself_may_resolve_its_run_folder_again(tmp_path):
    with RunLock(str(tmp_path)):  # DDP's launcher resolves hydra.run.dir again in the holding process
        lock_module.check_free(str(tmp_path))


@pytest.mark.parametrize("content", ["", '{"pid": 12', "[1, 2]"])
def test_a_half_written_or_corrupt_lock_is_taken_over_at_once_naming_it(tmp_path, caplog, content):
    (tmp_path / ".lock").write_text(content)
    with RunLock(str(tmp_path)):
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    assert "taking over the unreadable lock" in caplog.text and not (tmp_path / ".lock").exists()
