"""The one exception type the entry points turn into a one-line message instead of a traceback, and that
one line (the error contract: `error: ...` on stderr, exit status 1)."""

import logging
import sys

log = logging.getLogger("updown_vqa")


class UpdownError(Exception):
    """Bad input or configuration, with a message that names the file, key or id and what to do."""


def fail(message: str, status: int = 1):
    """Print the one error line (also to the log, where Hydra keeps one) and exit."""
    if log.hasHandlers():  # Hydra's log file; else logging's last resort would print it a second time
        log.error("%s", message)
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(status)
