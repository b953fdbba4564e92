"""Hydra's and omegaconf's errors as the one line of the error contract: an unknown key or a misspelt
group option with the nearest valid names, an override that does not parse with the quoting that fixes
it, a missing mandatory value, and an exception raised inside `instantiate` unwrapped to its cause,
each naming the key. core.cli uses them, unless HYDRA_FULL_ERROR=1 asks for Hydra's full traces."""

from __future__ import annotations

import difflib
import re

from updown_vqa.core.errors import UpdownError


def config_error(error: BaseException) -> UpdownError | None:
    """The one-line error of a Hydra or omegaconf exception, or None for anything else."""
    from hydra.errors import (
        ConfigCompositionException,
        HydraException,
        InstantiationException,
        MissingConfigException,
        OverrideParseException,
    )
    from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

    if isinstance(error, InstantiationException):
        return instantiation_error(error)
    if isinstance(error, MissingConfigException):
        return missing_option(error)
    if isinstance(error, OverrideParseException):
        return unparsable(error.override, error.message)
    if isinstance(error, ConfigCompositionException) and isinstance(error.__cause__, OmegaConfBaseException):
        return unknown_key(error.__cause__, error) or UpdownError(one_line(error))
    if isinstance(error, MissingMandatoryValue):
        return UpdownError(f"{error.full_key} is not set; give {error.full_key}=VALUE")
    if isinstance(error, OmegaConfBaseException):
        key = getattr(error, "full_key", None)
        return UpdownError(f"{key}: {first_line(error)}" if key else one_line(error))
    if isinstance(error, HydraException):
        return UpdownError(one_line(error))
    return None


def instantiation_error(error: BaseException) -> UpdownError:
    """`model (pkg.Class): ValueError: ...` from Hydra's 'Error in call to target' and its cause; an
    UpdownError raised inside keeps its own message."""
    from hydra.errors import InstantiationException

    message = str(error)
    while isinstance(error.__cause__, InstantiationException):
        error, message = error.__cause__, str(error.__cause__)
    cause = error.__cause__
    if isinstance(cause, UpdownError):
        return cause
    key = re.search(r"full_key: (\S+)", message)
    target = re.search(r"target '([^']+)'", message)
    where = " ".join(filter(None, [key and key.group(1), target and f"({target.group(1)})"]))
    what = f"{type(cause).__name__}: {one_line(cause)}" if cause is not None else one_line(message)
    return UpdownError(f"{where or 'instantiate'}: {what}")


def missing_option(error) -> UpdownError:
    """`data=shapez: no such option in group data; nearest: shapes, shapes_caption (all: ...)`."""
    if not error.options or not error.missing_cfg_file:
        return UpdownError(first_line(error))
    group, _, name = error.missing_cfg_file.rpartition("/")
    nearest = difflib.get_close_matches(name, error.options, n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(nearest)}? " if nearest else ""
    return UpdownError(f"{group}={name}: no such option in group '{group}'; {hint}"
                       f"(options: {', '.join(error.options)})")


def unparsable(override: str | None, message: str) -> UpdownError:
    """An override Hydra cannot parse, with the quoting that makes it one."""
    override = override or ""
    reason = next((line for line in message.splitlines()[1:2]), "").strip()
    if message.startswith("LexerNoViableAltException"):
        reason = "a character Hydra's grammar takes only inside quotes"
    if "=" not in override:
        return UpdownError(f"{override!r} is not an override: give key=value; a value with spaces is quoted "
                           f"whole, as in 'question=\"what color is it?\"' ({reason})")
    key, _, value = override.partition("=")
    quoted = value.replace("'", "\\'")
    return UpdownError(f"{override}: Hydra cannot parse this value ({reason}); quote it, as in "
                       f"'{key}=\"{quoted}\"' (the outer quotes for the shell, the inner for Hydra)")


def unknown_key(cause, error) -> UpdownError | None:
    """`model.hiden_dim: no such key; did you mean model.hidden_dim? (+model.hiden_dim=... adds one)`."""
    full_key = getattr(cause, "full_key", None)
    if not full_key or "not in struct" not in str(cause):
        return None
    parent = getattr(cause, "parent_node", None)
    names = [str(k) for k in parent.keys()] if parent is not None and hasattr(parent, "keys") else []
    prefix = full_key.rpartition(".")[0]
    nearest = [f"{prefix}.{n}" if prefix else n
               for n in difflib.get_close_matches(str(cause.key), names, n=3, cutoff=0.6)]
    hint = f"did you mean {' or '.join(nearest)}? " if nearest else ""
    return UpdownError(f"{full_key}: no such key; {hint}(a new key is added with a leading +, as in "
                       f"+{full_key}=VALUE)")


def first_line(error) -> str:
    return next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)


def one_line(error) -> str:
    """A multi-line message joined into one line (Hydra's 'See https://...' hints dropped)."""
    lines = [line.strip() for line in str(error).splitlines()]
    return "; ".join(line for line in lines if line and not line.startswith("See https://"))
