"""The one wrapper every command runs in: bad input is one `error: ` line on stderr and exit status 1."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable

from updown_vqa.core.errors import UpdownError
from updown_vqa.core.io import no_space, write_error

log = logging.getLogger("updown_vqa")


def fail(message: str, status: int = 1):
    """Print the one error line (also to the log, where Hydra keeps one) and exit."""
    log.error("%s", message)
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(status)


def command(main: Callable) -> Callable:
    """Wrap a command's body: an UpdownError from anywhere below becomes the error contract."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UpdownError as e:
            fail(str(e))
        except Exception as e:  # a full disk arrives wrapped (torch, h5py): still one line
            error = as_error(e)
            if error is None:
                raise
            fail(str(error))

    return wrapper


def as_error(error: BaseException) -> UpdownError | None:
    """The one-line error of an exception a user can act on (a full disk anywhere in its chain), or None."""
    full = no_space(error)
    if full is None:
        return None
    if full.filename:
        return write_error(full.filename, full)
    return UpdownError(f"a write failed ({full.strerror}); free space where this command writes (its "
                       "output folder, the store or run folder it names), then rerun the same command")
