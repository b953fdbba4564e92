"""`python -m updown_vqa.bench scale --fraction F --dir DIR`: the whole VQA v2 pipeline at a fraction of
its real size (443,757 + 214,354 questions over 82,783 + 40,504 images, 36 x 2048 features each), on
generated data in the official formats, each stage in a process of its own (bench/scale_stages.py):
generation, conversion of bottom-up TSV shards, preprocessing, an epoch of loading with 0, 1, 2 workers
from the page cache and cold, training steps at the paper's sizes with RSS sampled every 10 steps (and
the checkpoint), predict and evaluate on every val question. Per stage: wall time, CPU time, peak RSS
(and PSS of workers), output size, and the load average around it (the machine may be shared)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

from updown_vqa.bench.scale_report import write_reports
from updown_vqa.core.errors import UpdownError
from updown_vqa.datasets.vqa2_synthetic import FULL_SIZES

PAPER_MIN_ANSWER_COUNT = 9  # data=vqa2's threshold on train answers, scaled with the fraction
DISK_POLL_S = 0.25  # how often a stage's disk use is sampled


def add_arguments(parser) -> None:
    parser.add_argument("--fraction", type=float, required=True, help="of the real VQA v2 sizes (0 < F <= 1)")
    parser.add_argument("--dtype", default="float16", choices=["float16", "float32"], help="of the store")
    parser.add_argument("--dir", required=True,
                        help="the data go to DIR/scale_F_DTYPE (removed unless --keep), the report to DIR")
    parser.add_argument("--keep", action="store_true", help="keep the generated data")
    parser.add_argument("--out", help="folder for scale_F.json and scale_F.md (default: --dir)")
    parser.add_argument("--steps", type=int, default=200, help="training steps (default 200)")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--hidden-dim", type=int, default=1024, help="of the trained model")
    parser.add_argument("--train-batch-size", type=int, default=512,
                        help="of the training steps (the loading epochs use --batch-size)")
    parser.add_argument("--workers", default="0,1,2", help="loader workers to time an epoch with")
    parser.add_argument("--cold", default="auto", choices=["auto", "no"],
                        help="also time cold epochs, the store evicted from the page cache (default auto)")
    parser.add_argument("--shards", type=int, default=4, help="TSV shards (the public trainval_36 has 4)")
    parser.add_argument("--tsv", default="files", choices=["files", "pipe"],
                        help="files: write the TSV shards, then convert them; pipe: generate the TSV into "
                        "convert_tsv's standard input (`convert_tsv -`), so it is never on the disk (49 GB at "
                        "full size)")


def spec(args, work: str) -> dict:
    """Paths and sizes that every stage reads."""
    json_dir = os.path.join(work, "json")
    files = {s: {"questions": os.path.join(json_dir, f"v2_OpenEnded_mscoco_{s}_questions.json"),
                 "annotations": os.path.join(json_dir, f"v2_mscoco_{s}_annotations.json")} for s in FULL_SIZES}
    return {"fraction": args.fraction, "dtype": args.dtype, "seed": 0, "boxes": 36, "dim": 2048,
            "shards": args.shards, "tsv": args.tsv, "work": work, "json_dir": json_dir, "files": files, "tsv_dir": os.path.join(work, "tsv"),
            "store": os.path.join(work, "trainval_36.h5"), "cache_dir": os.path.join(work, "cache"),
            "min_answer_count": max(1, round(PAPER_MIN_ANSWER_COUNT * args.fraction)),
            "batch_size": args.batch_size, "train_batch_size": args.train_batch_size, "hidden_dim": args.hidden_dim, "steps": args.steps,
            "train_workers": 2, "ckpt": os.path.join(work, "run", "last.ckpt"),
            "results": os.path.join(work, "run", "val_results.json")}


def folder_bytes(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(_size(os.path.join(d, n)) for d, _, names in os.walk(path) for n in names)


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except FileNotFoundError:  # removed while the folder was walked (a stage's work file, renamed)
        return 0


def evict(path: str) -> str:
    """Take `path` out of the page cache: all caches where allowed (root), else the file's own pages."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3")
        return "drop_caches"
    except OSError:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        return "fadvise"  # /proc/sys/vm/drop_caches is read-only here (a container): this file's pages only


def _file_name(name: str) -> str:
    return name.replace(" ", "_")


def run_stage(name: str, argv: list[str], work: str, env: dict | None = None, logs: str | None = None) -> dict:
    """Run one stage as a child process; its wall and CPU time and peak RSS from its own accounting
    (wait4: the process and the workers it waited for), the run folder's largest size while it ran
    (sampled every DISK_POLL_S: a conversion's work file and final copy exist together only for a while),
    and what it wrote to its result file, if any. A failed stage's log is copied into `logs` (the run
    folder may be removed after it) and its last line, the stage's error, is the error's."""
    result_path = os.path.join(work, f"{_file_name(name)}.result.json")
    log_path = os.path.join(work, f"{_file_name(name)}.log")
    load_before, start, disk = os.getloadavg()[0], time.perf_counter(), 0
    with open(log_path, "w") as log:
        child = subprocess.Popen([sys.executable, *argv], stdout=log, stderr=subprocess.STDOUT, env=os.environ | (env or {}))
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            disk = max(disk, folder_bytes(work))
            if pid:
                break
            time.sleep(DISK_POLL_S)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        with open(log_path) as f:
            lines = [line.strip() for line in f if line.strip()]
        if logs:
            kept = os.path.join(logs, f"{os.path.basename(work)}.{_file_name(name)}.log")
            os.makedirs(logs, exist_ok=True)
            shutil.copyfile(log_path, kept)
            log_path = kept
        last = lines[-1].removeprefix("error: ") if lines else "no output"
        raise UpdownError(f"stage {name} failed: {last} (log: {log_path})")
    found = {}
    if os.path.isfile(result_path):
        with open(result_path) as f:
            found = json.load(f)
    return {"stage": name, "wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "load_before": load_before, "load_after": os.getloadavg()[0],
            "disk_gb": disk / 1e9, **found}


class Stages:
    """The stages of one run, in order. Each finished stage's record is kept in its folder
    (NAME.stage.json), so a rerun with --keep data resumes after the last finished stage, and the
    report so far is rewritten after every stage (`"complete": false` until the last)."""

    def __init__(self, args, config: dict, spec_path: str, work: str):
        self.args, self.config, self.spec_path, self.work = args, config, spec_path, work
        self.records: list[dict] = []

    def run(self, name: str, env: dict | None = None, command: list[str] = (), output: str | None = None,
            extra: dict | None = None) -> dict:
        """A stage of bench/scale_stages.py (or a project command run there), which writes its result,
        peak RSS included, beside its log; `output` is the file or folder whose size it made, `extra`
        what else to record; the run's folder size after it is its `disk_gb`."""
        saved = os.path.join(self.work, f"{_file_name(name)}.stage.json")
        if os.path.isfile(saved):
            with open(saved) as f:
                record = json.load(f) | {"resumed": True}
        else:
            result_path = os.path.join(self.work, f"{_file_name(name)}.result.json")
            stage = "command" if command else name.split(" ")[0]
            record = run_stage(name, ["-m", "updown_vqa.bench.scale_stages", stage, self.spec_path, result_path,
                                      *command], self.work, env, self.args.out or self.args.dir)
            if output:
                record["output_mb"] = folder_bytes(output) / 1e6
            record |= (extra or {}) | {"disk_gb": max(record["disk_gb"], folder_bytes(self.work) / 1e9)}
            with open(saved, "w") as f:
                json.dump(record, f)
        self.add(record)
        return record

    def add(self, record: dict) -> None:
        self.records.append(record)
        write_reports(report(self.args, self.config, self.records, complete=False), self.args.out or self.args.dir)


def report(args, config: dict, stages: list[dict], complete: bool = True) -> dict:
    disk = [s.get("disk_gb", 0.0) for s in stages]
    return {"fraction": args.fraction, "dtype": args.dtype, "settings": vars(args), "complete": complete,
            "sizes": {s: {"questions": round(q * args.fraction), "images": round(i * args.fraction)}
                      for s, (q, i) in FULL_SIZES.items()},
            "min_answer_count": config["min_answer_count"], "cpus": os.cpu_count(),
            "disk_peak_gb": max(disk, default=0.0), "kept": args.keep, "stages": stages,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def run(args) -> dict:
    """Every stage at `args.fraction`; the report (also written as JSON and Markdown)."""
    if not 0 < args.fraction <= 1:
        raise UpdownError(f"--fraction {args.fraction}: give a fraction of the real VQA v2 size in (0, 1]")
    try:
        workers = [int(w) for w in args.workers.split(",")]
    except ValueError:
        raise UpdownError(f"--workers {args.workers}: give worker counts separated by commas, e.g. 0,1,2") from None
    work = os.path.join(args.dir, f"scale_{args.fraction:g}_{args.dtype}")
    config = spec(args, work)
    spec_path = os.path.join(work, "spec.json")
    if os.path.exists(work):
        if not os.path.isfile(spec_path) or _read(spec_path) != config:
            raise UpdownError(f"{work} exists with other settings (an earlier run's data?); remove it or give "
                              "another --dir")
    else:
        os.makedirs(os.path.join(work, "run"))
        with open(spec_path, "w") as f:
            json.dump(config, f)
    stages = Stages(args, config, spec_path, work)
    try:
        _run_stages(stages, workers)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    final = report(args, config, stages.records)
    final["written"] = write_reports(final, args.out or args.dir)
    return final


def _read(path: str):
    with open(path) as f:
        return json.load(f)


def _run_stages(stages: Stages, workers: list[int]) -> None:
    args, config, work = stages.args, stages.config, stages.work
    stages.run("generate", output=work)
    stages.run("convert", output=config["store"])
    if not args.keep and os.path.isdir(config["tsv_dir"]):
        shutil.rmtree(config["tsv_dir"])  # the store holds it all now; frees the disk for the larger fractions
    stages.run("preprocess", output=config["cache_dir"])
    for cold in ([False, True] if args.cold == "auto" else [False]):
        for count in workers:
            name = f"load {count} workers {'cold' if cold else 'warm'}"
            saved = os.path.isfile(os.path.join(work, f"{_file_name(name)}.stage.json"))
            method = "page cache" if not cold or saved else evict(config["store"])
            stages.run(name, {"SCALE_WORKERS": str(count), "SCALE_COLD": str(int(cold))}, extra={"cache": method})
    train = stages.run("train")
    checkpoint = train.get("checkpoint") or {}
    stages.add({"stage": "checkpoint", "wall_s": checkpoint.get("save_s"), "output_mb": checkpoint.get("size_mb")})
    stages.run("predict", command=[
        "-m", "updown_vqa.predict", f"ckpt={config['ckpt']}", "split=val", *_data_overrides(config),
        f"out={config['results']}", f"paths.log_dir={os.path.join(work, 'run')}"], output=config["results"])
    val = config["files"]["val2014"]
    stages.run("evaluate", command=[
        "-m", "updown_vqa.evaluate", "--questions", val["questions"], "--annotations", val["annotations"],
        "--results", config["results"]])


def _data_overrides(config: dict) -> list[str]:
    val = config["files"]["val2014"]
    return ["data=vqa2", f"data.val.questions={val['questions']}", f"data.val.annotations={val['annotations']}",
            f"data.val.features={config['store']}", f"data.batch_size={config['batch_size']}",
            "data.num_workers=2", "data.pin_memory=false"]
