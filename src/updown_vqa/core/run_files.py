"""The names of the files a run folder holds, importable without torch or Lightning (`report` reads run
folders; `core.resume` writes them)."""

FINISHED = "finished.json"
FAILED = "failed.json"  # in the run folder: a multirun job that ended with an error
CHECKPOINTS = "checkpoints"  # the default checkpoint.dirpath inside a run folder
