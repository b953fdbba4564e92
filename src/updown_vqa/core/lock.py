"""One owner per run folder: `<run>/.lock` holds the training process's pid, host and a heartbeat.

A second training of the same folder stops at once, naming the owner. The lock is released when
training ends (however it ends); a lock left by a process that died is stale and taken over: its pid
is gone on this host, or its heartbeat (refreshed every HEARTBEAT seconds while training) is older
than STALE_AFTER, which covers other hosts of a shared file system and SLURM requeues.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time

from updown_vqa.core.errors import UpdownError
from updown_vqa.core.io import write_json

log = logging.getLogger(__name__)
LOCK = ".lock"
HEARTBEAT = 30.0  # seconds between refreshes of the heartbeat
STALE_AFTER = 300.0  # a lock whose heartbeat is older than this belongs to nobody
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")  # set in DDP's other processes


def main_process() -> bool:
    """Whether this is the process that owns the run (not one of DDP's other ranks)."""
    return all(os.environ.get(name, "0") == "0" for name in RANK_VARIABLES)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def stale(owner: dict, now: float | None = None) -> bool:
    """A lock whose process is dead on this host, or whose heartbeat stopped long ago, or that cannot
    be read (locks are written whole, so no live owner is writing it)."""
    if owner.get("unreadable"):
        return True
    now = time.time() if now is None else now
    if now - float(owner.get("heartbeat", 0)) > STALE_AFTER:
        return True
    return owner.get("host") == socket.gethostname() and not _alive(int(owner.get("pid", -1)))


def check_free(folder: str) -> None:
    """Refuse a run folder that a live training holds (before Hydra writes its .hydra/ there)."""
    lock = RunLock(folder)
    owner = lock._owner() if os.path.exists(lock.path) else None
    ours = owner is not None and owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname()
    if owner is not None and not ours and not stale(owner) and main_process():  # (DDP's launcher asks again)
        raise lock.busy(owner)


class RunLock:
    """Context manager: hold `<folder>/.lock` for the duration of a training run."""

    def __init__(self, folder: str):
        self.folder = os.path.abspath(folder)
        self.path = os.path.join(self.folder, LOCK)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _record(self) -> dict:
        return {"pid": os.getpid(), "host": socket.gethostname(), "heartbeat": time.time()}

    def acquire(self) -> None:
        os.makedirs(self.folder, exist_ok=True)
        for _ in range(3):  # a stale lock is removed, then taken like a free one
            try:
                self._create()
            except FileExistsError:
                owner = self._owner()
                if owner is not None and not stale(owner):
                    raise self.busy(owner) from None
                what = "unreadable lock" if (owner or {}).get("unreadable") else \
                    f"stale lock of pid {(owner or {}).get('pid')} on {(owner or {}).get('host')}"
                log.warning("%s: taking over the %s", self.path, what)
                try:
                    os.remove(self.path)
                except FileNotFoundError:
                    pass
                continue
            except PermissionError as e:
                raise UpdownError(f"{self.folder}: cannot write the run's lock here ({e.strerror}); give a "
                                  "writable paths.log_dir") from None
            self._thread = threading.Thread(target=self._beat, daemon=True, name="run-lock-heartbeat")
            self._thread.start()
            return
        raise UpdownError(f"{self.path}: cannot take the run folder's lock; another process keeps taking it")

    def _create(self) -> None:
        """Create the lock with its record in one step (FileExistsError if there is one): written to a
        file of our own, then hard-linked to the lock's name, so that no reader sees it half written."""
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(self._record(), f)
        try:
            os.link(tmp, self.path)
        finally:
            os.remove(tmp)

    def busy(self, owner: dict) -> UpdownError:
        return UpdownError(f"{self.folder}: another training (pid {owner.get('pid')} on {owner.get('host')}) is "
                           "using this run folder; wait for it to finish, or train under another name: "
                           "name=OTHER (or resume=never for a new folder beside it)")

    def _owner(self) -> dict | None:
        """The lock's record; None without a lock; {"unreadable": True} for a corrupt one."""
        try:
            with open(self.path) as f:
                owner = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {"unreadable": True}
        return owner if isinstance(owner, dict) else {"unreadable": True}

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT):
            try:
                write_json(self.path, self._record())
            except UpdownError as e:  # a full disk: the lock stays, only older
                log.warning("%s", e)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        owner = self._owner()
        if owner is not None and owner.get("pid") == os.getpid():
            os.remove(self.path)

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()
