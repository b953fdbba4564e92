"""Runs `python -m MODULE ARGS` for the tests in a child forked from a process that has already imported
the heavy libraries (torch, Lightning, Hydra, h5py, spaCy), so that a command run costs its own work and
not 5-9 CPU-seconds of imports each time (about 60 command runs in the suite).

The child behaves as `python -m` does where the tests can tell: its own working folder, environment,
`sys.argv` and `__main__`; stdout and stderr are its own files; an uncaught exception prints the
traceback and exits 1, `SystemExit` gives its status (a message goes to stderr with status 1); atexit
handlers run. The libraries' import-time state is shared with every child, which is what makes it fast:
nothing here runs a torch operation before forking, so no thread pool exists to be copied half-way.
`tests/core/test_forkserver.py` checks it against real interpreters; `UPDOWN_TESTS_FORK=0` turns it off.

Protocol: the parent writes pickled requests (module, args, cwd, env, timeout) as length-prefixed
frames on stdin, and reads (returncode, stdout, stderr, timed_out) frames back from stdout.
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
import sys
import tempfile
import time

PRELOAD = ("numpy", "torch", "torchvision", "pytorch_lightning", "hydra", "omegaconf", "h5py", "PIL.Image",
           "matplotlib", "spacy", "nbformat")


def read_frame(stream) -> object | None:
    header = stream.read(4)
    if len(header) < 4:
        return None
    (size,) = struct.unpack("!I", header)
    return pickle.loads(stream.read(size))


def write_frame(stream, value) -> None:
    data = pickle.dumps(value)
    stream.write(struct.pack("!I", len(data)) + data)
    stream.flush()


def exit_status(error: SystemExit) -> int:
    """What the interpreter does with an uncaught SystemExit (its message goes to stderr)."""
    if error.code is None:
        return 0
    if isinstance(error.code, int):
        return error.code
    print(error.code, file=sys.stderr)
    return 1


def run_child(module: str, args: list[str], cwd: str, env: dict, out_fd: int, err_fd: int) -> None:
    """In the forked child: become `python -m module args`, then exit; never returns."""
    import atexit
    import runpy
    import traceback

    status = 1
    try:
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        sys.stdout = sys.__stdout__  # fd 1 again (the server points sys.stdout at stderr)
        sys.argv = [module, *args]
        sys.path[0] = cwd  # what `python -m` puts first
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
            status = 0
        except SystemExit as error:
            status = exit_status(error)
        except BaseException:  # noqa: BLE001 - the interpreter's own handling of an uncaught exception
            traceback.print_exc()
            status = 1
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        os._exit(status)


def serve(requests, replies) -> None:
    while (request := read_frame(requests)) is not None:
        module, args, cwd, env, timeout = request
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            pid = os.fork()
            if pid == 0:
                requests.close()
                run_child(module, args, cwd, env, out.fileno(), err.fileno())
            deadline, timed_out = time.monotonic() + timeout, False
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    break
                if time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    _, status = os.waitpid(pid, 0)
                    timed_out = True
                    break
                time.sleep(0.01)
            returncode = os.waitstatus_to_exitcode(status)
            out.seek(0)
            err.seek(0)
            write_frame(replies, (returncode, out.read(), err.read(), timed_out))


def main() -> None:
    import importlib

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing else may write into the reply stream
    serve(requests, replies)


if __name__ == "__main__":
    main()
