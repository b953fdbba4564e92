"""The one wrapper every command runs in: bad input is one `error: ` line on stderr and exit status 1."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable

from updown_vqa.core.errors import UpdownError, fail
from updown_vqa.core.hydra_errors import config_error
from updown_vqa.core.io import no_space, not_writable, write_error

log = logging.getLogger("updown_vqa")


def command(main: Callable) -> Callable:
    """Wrap a command's body: an UpdownError from anywhere below (or a full disk, which torch and h5py
    wrap in their own errors) becomes the error contract. In a Hydra multirun a failed job is recorded
    in its folder's failed.json instead, and the other jobs go on."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        composed()  # the run and the processes it starts see the user's HYDRA_FULL_ERROR
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


COMPOSING = "UPDOWN_VQA_COMPOSING"  # set beside HYDRA_FULL_ERROR by hydra_command (inherited by job processes)


def full_error_asked() -> bool:
    """The user (not hydra_command) set HYDRA_FULL_ERROR=1 for Hydra's complete stack traces."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1" and COMPOSING not in os.environ


def composed() -> None:
    """Unset the HYDRA_FULL_ERROR that hydra_command set while Hydra composed the config."""
    if os.environ.pop(COMPOSING, None) is not None:
        os.environ.pop("HYDRA_FULL_ERROR", None)


def hydra_command(config_name: str) -> Callable:
    """`@hydra.main` of a command's config around `command`: Hydra's and omegaconf's own errors while
    composing (an unknown key, a misspelt option, an override that does not parse) keep the error
    contract too. Hydra raises them to us instead of printing its multi-line report while
    HYDRA_FULL_ERROR is set, which we do until the config is composed; a user who sets it gets
    Hydra's full traces, as Hydra documents."""

    def decorate(body: Callable) -> Callable:
        import hydra

        from updown_vqa.core.paths import config_dir

        task = hydra.main(version_base="1.3", config_path=config_dir(), config_name=config_name)(command(body))

        @functools.wraps(body)
        def main():
            if full_error_asked():
                return task()
            os.environ["HYDRA_FULL_ERROR"] = os.environ[COMPOSING] = "1"
            try:
                return task()
            except Exception as e:
                error = as_error(e)
                if error is None:
                    raise
                fail(str(error))
            finally:
                composed()

        return main

    return decorate


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
    """The one-line error of an exception a user can act on (a full disk anywhere in its chain; Hydra's
    and omegaconf's errors unless HYDRA_FULL_ERROR asks for their traces), or None."""
    full = no_space(error)
    if full is None:
        return not_writable(error) or (None if full_error_asked() else config_error(error))
    if full.filename:
        return write_error(full.filename, full)
    return UpdownError(f"a write failed ({full.strerror}); free space where this command writes (its "
                       "output folder, the store or run folder it names), then rerun the same command")
