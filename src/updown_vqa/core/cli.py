"""The one wrapper every command runs in: bad input is one `error: ` line on stderr and exit status 1."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable

from updown_vqa.core.errors import UpdownError

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

    return wrapper
