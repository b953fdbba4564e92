"""One reader module per dataset layout; `data.dataset` names which one a data module uses.

Each reader module provides the same interface, so a new dataset is one module here and one config in
conf/data/ (see the README, "Adding a dataset"):

- `NAME`, `DEFAULT_EXPERIMENT` (the experiment `data=NAME` brings), `ANSWER_TYPES` (the groups that
  `val/acc_<type>` reports)
- `read_split(questions, annotations) -> {"question_ids", "image_ids", "questions", "annotations"}`
  (`annotations` is None for an unanswered split; image ids are ints or strings)
- `answer_labels(annotations) -> [str]`: each question's best answer, as the answer list counts it
- `encode_answers(annotations, answer_index) -> arrays`: COO soft targets `target_rows/cols/vals`, the
  accuracy each candidate answer would get `acc_rows/cols/vals`, and `answer_type` indices
- `submission(question_ids, answers) -> list`: the results file the dataset's evaluation server takes
- `ANSWERS_IN_QUESTIONS`: True when the questions files carry the answers (no annotations files)
"""

from __future__ import annotations

import importlib
from types import ModuleType

from updown_vqa.core.errors import UpdownError

READERS = ("vqa2", "vqacp2", "gqa", "clevr")


def get_reader(name: str) -> ModuleType:
    """The reader module of dataset `name`."""
    if name not in READERS:
        raise UpdownError(f"data.dataset={name}: unknown dataset layout; use one of {list(READERS)}")
    return importlib.import_module(f"updown_vqa.vqa.readers.{name}")


def check_val_split(val, dataset: str, visual: str = "features") -> None:
    """Training validates on data.val: it needs questions and `visual` (features, or images for an
    end-to-end model), and annotations unless the dataset's questions carry the answers. Checked when the
    data module is made, before any epoch."""
    if not val:
        raise UpdownError(f"data.val is not set; training validates on it (give questions, annotations and "
                          f"{visual})")
    in_questions = getattr(get_reader(dataset), "ANSWERS_IN_QUESTIONS", False)
    for part in ("questions", visual) if in_questions else ("questions", "annotations", visual):
        if not val.get(part):
            raise UpdownError(f"data.val.{part} is not set; training validates on data.val, which needs "
                              f"questions, annotations and {visual}")
