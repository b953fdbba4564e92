"""One store from the parts of a sharded extraction, equal to what one process would have written.

`extract ... shard=I/N` writes OUT.part-I-of-N.h5 (a finished flat store). The parts are read side by
side as if they were one work file and copied by the writer's own sorted copy (features/sorted_copy.py
`write_sorted`): a bounded slice at a time, sorted by image id, padded like a one-process store, with
the union of the `skipped` lists. The process that finishes the last part merges (`merge_when_complete`);
`OUT.merge.lock` (core/lock.py) lets one of two parts that finish together do it.
"""

from __future__ import annotations

import contextlib
import glob
import os
from collections.abc import Callable, Sequence

import h5py
import numpy as np

from updown_vqa.core.errors import UpdownError
from updown_vqa.core.lock import STALE_AFTER, RunLock
from updown_vqa.features.finite import ATTR as ALL_FINITE
from updown_vqa.features.shards import PART_NAME, part_path
from updown_vqa.features.sorted_copy import write_sorted
from updown_vqa.features.store import PER_BOX, FeatureStore

PER_PART_ATTRS = ("layout", ALL_FINITE)  # set anew for the merged store; every other attr must agree


class MergeLock(RunLock):
    """`OUT.merge.lock`: one process merges into OUT at a time; a dead merger's lock is taken over."""

    def __init__(self, out: str):
        super().__init__(os.path.dirname(os.path.abspath(out)))
        self.out, self.path = out, f"{os.path.abspath(out)}.merge.lock"

    def busy(self, owner: dict) -> UpdownError:
        return UpdownError(f"{self.out}: pid {owner.get('pid')} on {owner.get('host')} is merging the "
                           f"parts into it; wait for it (a lock whose process died is taken over, on "
                           f"another host after {STALE_AFTER:.0f} s)")


def find_parts(out: str) -> list[str]:
    """OUT.part-0-of-N.h5 .. OUT.part-(N-1)-of-N.h5 for the N of the parts found beside OUT."""
    counts = set()
    for path in glob.glob(glob.escape(out) + ".part-*"):  # finished parts and unfinished ones' work files
        match = PART_NAME.match(path.removesuffix(".work.h5"))
        if match and match["out"] == out:
            counts.add(int(match["count"]))
    counts = sorted(counts)
    if not counts:
        raise UpdownError(f"{out}: no parts {out}.part-I-of-N.h5 found; run extract with shard=I/N "
                          "first, or name the parts to merge")
    if len(counts) > 1:
        raise UpdownError(f"{out}: parts of {' and '.join(map(str, counts))}-way splits lie beside it; "
                          "name the parts to merge")
    return [part_path(out, index, counts[0]) for index in range(counts[0])]


def check_parts(parts: Sequence[str]) -> None:
    """One error naming every part that is missing or unfinished (of OUT.part-I-of-N.h5, all N)."""
    named = [m for m in map(PART_NAME.match, parts) if m]
    expected = list(parts) + [part_path(m["out"], i, int(m["count"])) for m in named
                              for i in range(int(m["count"]))]
    problems = []
    for path in dict.fromkeys(expected):
        if os.path.exists(f"{path}.work.h5"):
            problems.append(f"{path} is unfinished ({path}.work.h5 holds its images so far)")
        elif not os.path.isfile(path):
            problems.append(f"{path} is missing")
    if len({(m["out"], m["count"]) for m in named}) > 1:
        problems.append("the parts come from different splits (" + ", ".join(parts) + ")")
    if problems:
        raise UpdownError(f"cannot merge: {'; '.join(problems)}; run or rerun those shards "
                          "(extract ... shard=I/N resumes an unfinished part), then merge again")


def part_ready(path: str, recipe: dict, dtype: str, images, keys: list[str] | None = None) -> bool:
    """A finished part made with `recipe` and `dtype` that holds exactly `images` (written or skipped)."""
    if not os.path.isfile(path) or os.path.exists(f"{path}.work.h5"):
        return False
    try:
        store = FeatureStore(path)
    except UpdownError:
        return False
    if any(store.attrs.get(k) != v for k, v in recipe.items()) or store.attrs.get("dtype") != dtype:
        return False
    if sorted(store.image_ids.tolist() + store.skipped.tolist()) != sorted(images):
        return False
    return keys is None or (store.image_keys is not None and
                            all(keys[i] == k for i, k in zip(store.image_ids.tolist(), store.image_keys)))


def merge(out: str, parts: Sequence[str], layout: str = "padded", remove_parts: bool = False) -> dict:
    """Merge finished flat part stores into `out` (sorted by image id); returns its counts."""
    with MergeLock(out):
        return _merge(out, parts, layout, remove_parts)


def merge_when_complete(out: str, parts: Sequence[str], ready: Callable[[int], bool],
                        layout: str = "padded") -> bool:
    """Merge the parts into `out` and remove them if every part is `ready` (finished, made with this
    run's settings, holding its images); else say which are awaited. True when this call merged."""
    waiting = [path for index, path in enumerate(parts) if not ready(index)]
    if waiting:
        shown = ", ".join(waiting[:3]) + (f" and {len(waiting) - 3} more" if len(waiting) > 3 else "")
        print(f"{out}: {len(parts) - len(waiting)} of {len(parts)} parts done; waiting for {shown} "
              "(the last part to finish merges them)")
        return False
    lock = MergeLock(out)
    try:
        lock.acquire()
    except UpdownError as busy:  # another part finished at the same moment and merges them
        print(busy)
        return False
    try:
        if not all(ready(index) for index in range(len(parts))):  # merged meanwhile by the other part
            print(f"{out}: its parts were merged by another process")
            return False
        _merge(out, parts, layout, remove_parts=True)
    finally:
        lock.release()
    return True


def _merge(out: str, parts: Sequence[str], layout: str, remove_parts: bool) -> dict:
    if not parts:
        raise UpdownError(f"{out}: no parts to merge")
    if os.path.abspath(out) in {os.path.abspath(p) for p in parts}:
        raise UpdownError(f"{out}: the merged store cannot be one of its parts; give another path")
    check_parts(parts)
    stores = [FeatureStore(p) for p in parts]  # each one's index checked before anything is read
    attrs, image_keys = _common_attrs(stores), _image_keys(stores)
    with contextlib.ExitStack() as stack:
        files = [stack.enter_context(h5py.File(p, "r")) for p in parts]
        write_sorted(_SideBySide(stores, files), out, attrs, layout, image_keys)
    if remove_parts:
        for path in parts:
            os.remove(path)
    summary = {"images": sum(len(s) for s in stores), "parts": len(parts),
               "skipped": len(FeatureStore(out).skipped)}
    print(f"{out}: merged {summary['parts']} parts, {summary['images']} images, "
          f"{summary['skipped']} skipped")
    return summary


def _common_attrs(stores: list[FeatureStore]) -> dict:
    """The parts' shared recipe (raw HDF5 values) and `all_finite` of them all; any difference is an error."""
    first = stores[0]
    for store in stores:
        if store.layout != "flat":
            raise UpdownError(f"{store.path}: a padded store; merge takes the flat parts that "
                              "extract shard=I/N writes")
        if (store.feature_dim, store.dtype) != (first.feature_dim, first.dtype):
            raise UpdownError(f"{store.path}: {store.feature_dim}-d {store.dtype} features, but "
                              f"{first.path} has {first.feature_dim}-d {first.dtype}; merge parts of one extraction")
        keys = (set(store.attrs) | set(first.attrs)) - set(PER_PART_ATTRS)
        changed = sorted(k for k in keys if store.attrs.get(k) != first.attrs.get(k))
        if changed:
            shown = ", ".join(f"{k}: {first.attrs.get(k)!r} vs {store.attrs.get(k)!r}" for k in changed[:5])
            raise UpdownError(f"{store.path}: made with other settings than {first.path} ({shown}); "
                              "re-extract that part with the same settings")
    with h5py.File(first.path, "r") as f:
        attrs = {k: v for k, v in f.attrs.items() if k not in PER_PART_ATTRS}
    finite = [s.attrs.get(ALL_FINITE) for s in stores]
    if None not in finite:  # else unknown, as the writer leaves it
        attrs[ALL_FINITE] = all(finite)
    return attrs


def _image_keys(stores: list[FeatureStore]) -> dict[int, str] | None:
    """{image id: key} of parts of an extraction by file name (ids=name), else None."""
    keyed = [s.image_keys is not None for s in stores]
    if any(keyed) and not all(keyed):
        raise UpdownError(f"{stores[keyed.index(False)].path} has no image_keys but "
                          f"{stores[keyed.index(True)].path} has; merge parts of one extraction")
    if not all(keyed):
        return None
    return {int(i): str(k) for s in stores for i, k in zip(s.image_ids.tolist(), s.image_keys)}


class _SideBySide:
    """The parts' datasets read as one work file: per-image and per-row arrays end to end."""

    def __init__(self, stores: list[FeatureStore], files: list[h5py.File]):
        ids = np.concatenate([s.image_ids for s in stores])
        unique, counts = np.unique(ids, return_counts=True)
        if (counts > 1).any():
            twice = int(unique[counts > 1][0])
            holders = [s.path for s in stores if twice in set(s.image_ids.tolist())]
            raise UpdownError(f"image id {twice} is in {' and '.join(holders)}; each image belongs "
                              "to one part (were these parts made from different shard counts?)")
        per_box = [[name for name in PER_BOX if name in f] for f in files]
        if any(names != per_box[0] for names in per_box):
            raise UpdownError(f"{stores[0].path} and another part hold different per-box datasets; "
                              "merge parts of one extraction")
        self.files, self.attrs = files, {"per_box": per_box[0]}

    def __getitem__(self, name: str) -> _EndToEnd:
        return _EndToEnd([f[name] for f in self.files if name in f], name)


class _EndToEnd:
    """One dataset of every part, end to end: `[:]`, `shape`, `dtype`, `read_direct` of a row range."""

    def __init__(self, datasets: list[h5py.Dataset], name: str):
        self.datasets = datasets
        self.starts = np.concatenate([[0], np.cumsum([len(d) for d in datasets], dtype=np.int64)])
        self.dtype = datasets[0].dtype if datasets else np.dtype(object if name.endswith("reasons") else np.int64)
        self.shape = (int(self.starts[-1]),) + (datasets[0].shape[1:] if datasets else ())

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        if key != slice(None):
            raise IndexError("parts are read whole ([:]) or by read_direct")
        return np.concatenate([d[:] for d in self.datasets]) if self.datasets else np.zeros(0, self.dtype)

    def read_direct(self, dest: np.ndarray, rows: slice) -> None:
        """Rows [rows.start, rows.stop) of the parts end to end into `dest`, part by part."""
        for dataset, start, end in zip(self.datasets, self.starts[:-1], self.starts[1:]):
            first, last = max(rows.start, start), min(rows.stop, end)
            if first < last:
                dataset.read_direct(dest, np.s_[first - start : last - start],
                                    np.s_[first - rows.start : last - rows.start])
