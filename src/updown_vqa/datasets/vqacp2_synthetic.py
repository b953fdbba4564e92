"""Small VQA-CP v2 files in the official layout, for tests: the VQA v2 generator's questions and answers
re-split by (question type, answer) so that train and test priors differ, as VQA-CP's are.

    python -m updown_vqa.datasets.vqacp2_synthetic --out DIR [--questions 200] [--images 20]

Writes vqacp_v2_{train,test}_{questions,annotations}.json: top-level lists whose items carry
`coco_split` (train2014 or val2014), image ids 1..images shared by both splits.
"""

from __future__ import annotations

import argparse
import os
import random
import zlib

from updown_vqa.core.io import write_json
from updown_vqa.datasets.vqa2_synthetic import QUESTION_TYPES, Corpus, human_answers, most_common


def vqacp_items(num_questions: int, num_images: int, seed: int = 0) -> dict[str, tuple[list, list]]:
    """{"train"|"test": (questions, annotations)}: each (question type, answer) group lands in one split."""
    rng, corpus = random.Random(seed), Corpus(seed, num_words=2000, num_other_answers=40)
    out = {"train": ([], []), "test": ([], [])}
    for i in range(num_questions):
        question_type, answer_type, _ = QUESTION_TYPES[i % len(QUESTION_TYPES)]
        humans = human_answers(corpus.answer(answer_type, rng), answer_type, corpus, rng)
        best = most_common(humans)
        split = "test" if zlib.crc32(f"{question_type}|{best}".encode()) % 3 == 0 else "train"
        image_id = 1 + i % num_images
        coco_split = "train2014" if image_id % 2 else "val2014"
        question_id = image_id * 1000 + i
        out[split][0].append({"question_id": question_id, "image_id": image_id, "coco_split": coco_split,
                              "question": corpus.question(question_type, rng)})
        out[split][1].append({"question_id": question_id, "image_id": image_id, "coco_split": coco_split,
                              "question_type": question_type, "answer_type": answer_type,
                              "multiple_choice_answer": best,
                              "answers": [{"answer": h, "answer_confidence": "yes", "answer_id": k + 1}
                                          for k, h in enumerate(humans)]})
    return out


def write_vqacp(root: str, num_questions: int = 200, num_images: int = 20, seed: int = 0) -> dict[str, dict]:
    """Write the four files under `root`; returns {split: {"questions": path, "annotations": path}}."""
    paths = {}
    for split, (questions, answers) in vqacp_items(num_questions, num_images, seed).items():
        paths[split] = {kind: os.path.join(root, f"vqacp_v2_{split}_{kind}.json")
                        for kind in ("questions", "annotations")}
        write_json(paths[split]["questions"], questions)
        write_json(paths[split]["annotations"], answers)
    return paths


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m updown_vqa.datasets.vqacp2_synthetic", description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for split, files in write_vqacp(args.out, args.questions, args.images, args.seed).items():
        print(split, files["questions"], files["annotations"])


if __name__ == "__main__":
    main()
