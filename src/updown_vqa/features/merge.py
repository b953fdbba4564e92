"""Merge the parts of a sharded extraction into one store: `python -m updown_vqa.features.merge OUT [PARTS...]`.

PARTS default to every OUT.part-I-of-N.h5 of `extract ... shard=I/N` (the extraction merges them by
itself when its last part finishes; this command is for a merge that was interrupted or left to later).
The result equals a one-process extraction's store; the parts stay unless --remove-parts.
"""

from __future__ import annotations

import argparse
import sys

from updown_vqa.core.cli import as_error
from updown_vqa.core.errors import UpdownError
from updown_vqa.core.io import refuse_overwriting_inputs
from updown_vqa.features.parts import find_parts, merge


def main(argv: list[str] | None = None) -> int:
    """Command line: merge, print the counts; bad input is one error line and status 1."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="the store to write (.h5)")
    parser.add_argument("parts", nargs="*", help="part stores (default: every OUT.part-I-of-N.h5)")
    parser.add_argument("--layout", choices=("padded", "flat"), default="padded",
                        help="padded [N, K, D], as extract writes (default), or flat [R, D] with offsets")
    parser.add_argument("--remove-parts", action="store_true", help="delete the parts once merged")
    args = parser.parse_args(argv)
    try:
        parts = args.parts or find_parts(args.out)
        refuse_overwriting_inputs("out", args.out, {"part": parts})  # before any work
        merge(args.out, parts, args.layout, args.remove_parts)
    except (UpdownError, OSError, RuntimeError) as e:  # h5py wraps a full disk in either
        error = e if isinstance(e, UpdownError) else as_error(e)
        if error is None:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
