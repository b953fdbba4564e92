"""The one wrapper every command runs in: bad input is one `error: ` line on stderr and exit status 1."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable

from updown_vqa.core.errors import UpdownError, fail
from updown_vqa.core.io import no_space, write_error

log = logging.getLogger("updown_vqa")


def command(main: Callable) -> Callable:
    """Wrap a command's body: an UpdownError from anywhere below (or a full disk, which torch and h5py
    wrap in their own errors) becomes the error contract. In a Hydra multirun a failed job is recorded
    in its folder's failed.json instead, and the other jobs go on."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except Exception as e:
            error = e if isinstance(e, UpdownError) else as_error(e)
            if in_multirun():
                record_failure(error or e)
            if error is None:
                raise  # a bug: its traceback (a multirun raises it once every job has run)
            if not in_multirun():
                fail(str(error))
            log.error("%s", error)
            print(f"error: {error}", file=sys.stderr, flush=True)
            return None

    return wrapper


def in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def record_failure(error: BaseException) -> None:
    """`failed.json` in the multirun job's folder: the error that ended it, for the report."""
    from hydra.core.hydra_config import HydraConfig

    from updown_vqa.core.resume import write_failed

    message = str(error) if isinstance(error, UpdownError) else f"{type(error).__name__}: {error}"
    write_failed(HydraConfig.get().runtime.output_dir, message)


def as_error(error: BaseException) -> UpdownError | None:
    """The one-line error of an exception a user can act on (a full disk anywhere in its chain), or None."""
    full = no_space(error)
    if full is None:
        return None
    if full.filename:
        return write_error(full.filename, full)
    return UpdownError(f"a write failed ({full.strerror}); free space where this command writes (its "
                       "output folder, the store or run folder it names), then rerun the same command")
