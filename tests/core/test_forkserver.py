"""The tests' fork server (tests/forkserver.py) runs a command as a real `python -m` would, where the
command tests can tell: status, stdout, stderr, argv, environment, working folder, atexit, tracebacks."""

import os
import subprocess
import sys
import textwrap

import pytest
from conftest import run_module

PROBE = textwrap.dedent("""
    import argparse, atexit, os, sys

    what = sys.argv[1]
    print("name", __name__, __spec__.name, os.path.basename(sys.argv[0]), sys.argv[1:])
    print("cwd", os.getcwd() == sys.path[0], os.environ.get("PROBE_VALUE"))
    print("to stderr", file=sys.stderr)
    if what == "atexit":
        atexit.register(lambda: print("atexit ran"))
    elif what == "raise":
        raise ValueError("boom")
    elif what == "message":
        sys.exit("error: a message")
    elif what == "status":
        sys.exit(3)
    elif what == "argparse":
        argparse.ArgumentParser(prog="probe").parse_args(["--unknown"])
""")


@pytest.fixture
def probe_dir(tmp_path, monkeypatch):
    (tmp_path / "fork_probe.py").write_text(PROBE)
    monkeypatch.setenv("PROBE_VALUE", "from-the-test")
    return str(tmp_path)


def real(probe_dir: str, what: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS="ignore", HYDRA_FULL_ERROR="0")
    return subprocess.run([sys.executable, "-m", "fork_probe", what], capture_output=True, text=True,
                          cwd=probe_dir, env=env, timeout=60)


@pytest.mark.parametrize("what", ["ok", "atexit", "message", "status", "argparse"])
def test_a_forked_command_looks_like_a_real_one(probe_dir, what, monkeypatch):
    monkeypatch.delenv("UPDOWN_TESTS_FORK", raising=False)
    forked, reference = run_module("fork_probe", what, cwd=probe_dir), real(probe_dir, what)
    assert (forked.returncode, forked.stdout, forked.stderr) == \
        (reference.returncode, reference.stdout, reference.stderr)
    assert "name __main__ fork_probe fork_probe.py" in forked.stdout
    assert "cwd True from-the-test" in forked.stdout


def test_an_uncaught_exception_prints_its_traceback_and_exits_1(probe_dir, monkeypatch):
    monkeypatch.delenv("UPDOWN_TESTS_FORK", raising=False)
    forked, reference = run_module("fork_probe", "raise", cwd=probe_dir), real(probe_dir, "raise")
    assert forked.returncode == reference.returncode == 1
    for result in (forked, reference):
        assert "Traceback (most recent call last)" in result.stderr
        assert result.stderr.rstrip().endswith("ValueError: boom")


def test_a_command_past_its_timeout_is_killed(probe_dir, monkeypatch):
    monkeypatch.delenv("UPDOWN_TESTS_FORK", raising=False)
    with open(os.path.join(probe_dir, "sleeper.py"), "w") as f:
        f.write("import time\ntime.sleep(60)\n")
    with pytest.raises(subprocess.TimeoutExpired):
        run_module("sleeper", cwd=probe_dir, timeout=1)
    assert run_module("fork_probe", "ok", cwd=probe_dir).returncode == 0  # the server lives on
