"""A synthetic corpus in the official VQA v2 question/annotation formats, sized like the real one.

For timing and testing the VQA v2 reader without the real files (which cannot be downloaded here):
questions of 3-15 tokens built from the official question types, answers drawn from a Zipf-like
distribution over a few thousand strings, and ten human answers per question written the way people
type them (capitals, trailing punctuation, articles, number words), so that the official answer
normalisation has real work to do. The images do not exist; only the json files are written.

    python -m updown_vqa.datasets.vqa2_synthetic --out data/vqa2_synthetic [--scale 1.0] [--time]

`--time` then preprocesses it as `data=vqa2` would (train+val answers) and prints the time taken.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import tempfile
import time
from itertools import accumulate

from updown_vqa.core.errors import fail
from updown_vqa.core.io import atomic_write

# Real VQA v2 sizes (train2014 / val2014).
FULL_SIZES = {"train2014": (443_757, 82_783), "val2014": (214_354, 40_504)}
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
COLORS = ["white", "black", "red", "blue", "green", "brown", "yellow", "gray", "orange", "pink",
          "silver", "purple", "tan", "red and white", "black and white", "blue and white"]
# (question type, answer type, share of questions), after the official question types.
QUESTION_TYPES = [
    ("is the", "yes/no", 0.10), ("is this", "yes/no", 0.09), ("are the", "yes/no", 0.04),
    ("is there a", "yes/no", 0.04), ("does the", "yes/no", 0.03), ("is this a", "yes/no", 0.04),
    ("are there", "yes/no", 0.02), ("do you", "yes/no", 0.02), ("how many", "number", 0.10),
    ("how many people are", "number", 0.02), ("what color is the", "other", 0.08),
    ("what is the", "other", 0.09), ("what is", "other", 0.05), ("what kind of", "other", 0.04),
    ("what type of", "other", 0.04), ("where is the", "other", 0.03), ("what is the man", "other", 0.03),
    ("which", "other", 0.03), ("why", "other", 0.02), ("who is", "other", 0.02),
    ("what sport is", "other", 0.02), ("what room is", "other", 0.02), ("what are the", "other", 0.03),
]
FILLERS = ["in", "on", "of", "the", "this", "picture", "image", "photo", "near", "with", "his", "her",
           "wearing", "holding", "left", "right", "front", "back", "to", "a", "at", "sitting", "standing"]
SYLLABLES = ["ba", "ca", "de", "fi", "go", "hu", "ja", "ke", "li", "mo", "nu", "pa", "qui", "ro", "sa",
             "te", "vi", "wo", "xe", "yo", "za", "bro", "cla", "dri", "fle", "gra", "plo", "stu", "tri"]


def _words(count: int, rng: random.Random) -> list[str]:
    """`count` distinct pronounceable made-up words."""
    seen: dict[str, None] = {}
    while len(seen) < count:
        seen["".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4)))] = None
    return list(seen)


def _zipf_weights(n: int, exponent: float = 1.0) -> list[float]:
    return list(accumulate(1.0 / (rank**exponent) for rank in range(1, n + 1)))


class Corpus:
    """The word and answer pools and their Zipf-like cumulative weights."""

    def __init__(self, seed: int = 0, num_words: int = 14_000, num_other_answers: int = 20_000):
        rng = random.Random(seed)
        self.nouns = _words(num_words, rng)
        self.noun_weights = _zipf_weights(num_words, 1.05)
        made_up = [" ".join(self.nouns[rng.randrange(2000)] for _ in range(rng.choice((1, 1, 1, 2, 3))))
                   for _ in range(num_other_answers)]
        self.other = list(dict.fromkeys(COLORS + made_up))
        self.other_weights = _zipf_weights(len(self.other), 1.075)  # ~3.1k answers given 9+ times
        self.numbers = [str(n) for n in range(21)] + ["100", "1,000", "2.5"]
        self.number_weights = _zipf_weights(len(self.numbers), 1.6)
        self.type_weights = list(accumulate(share for _, _, share in QUESTION_TYPES))

    def answer(self, answer_type: str, rng: random.Random) -> str:
        if answer_type == "yes/no":
            return "yes" if rng.random() < 0.55 else "no"
        if answer_type == "number":
            return rng.choices(self.numbers, cum_weights=self.number_weights)[0]
        return rng.choices(self.other, cum_weights=self.other_weights)[0]

    def question(self, question_type: str, rng: random.Random) -> str:
        """The question type, then 1-11 more words (3-15 tokens in all), then '?'."""
        nouns = rng.choices(self.nouns, cum_weights=self.noun_weights, k=rng.randint(1, 3))
        fillers = rng.sample(FILLERS, k=min(len(FILLERS), max(0, int(rng.expovariate(0.5)))))
        words = (question_type.split() + nouns + fillers)[:14]
        if rng.random() < 0.1:
            words[-1] += ","  # some questions carry inner punctuation
        text = " ".join(words)
        return text[0].upper() + text[1:] + "?"


def typed_as_a_person_would(answer: str, answer_type: str, rng: random.Random) -> str:
    """One human's spelling of `answer`: capitals, number words, articles, trailing punctuation."""
    if answer_type == "number" and answer.isdigit() and int(answer) <= 10 and rng.random() < 0.15:
        answer = NUMBER_WORDS[int(answer)]
    elif answer_type == "other" and rng.random() < 0.05:
        answer = rng.choice(("a ", "the ", "an ")) + answer
    roll = rng.random()
    if roll < 0.08:
        answer = answer.capitalize()
    elif roll < 0.11:
        answer += rng.choice((".", "!", " ."))
    elif roll < 0.12:
        answer = f" {answer} "
    return answer


def human_answers(best: str, answer_type: str, corpus: Corpus, rng: random.Random) -> list[str]:
    """Ten answers: the best one typed by an agreeing share of people, other answers by the rest."""
    agreeing = rng.choices((10, 9, 8, 6, 4, 3), weights=(40, 15, 15, 12, 10, 8))[0]
    answers = [best] * agreeing + [corpus.answer(answer_type, rng) for _ in range(10 - agreeing)]
    rng.shuffle(answers)
    return [typed_as_a_person_would(a, answer_type, rng) for a in answers]


def most_common(answers: list[str]) -> str:
    """The most frequent answer, lower-cased and stripped (ties: first seen), like the official field."""
    plain = [a.strip().lower() for a in answers]
    return max(plain, key=plain.count)


def _write_json_stream(path: str, head: dict, key: str, items) -> None:
    """{**head, key: [items...]}, written item by item so a full-size corpus never sits in memory."""
    with atomic_write(path) as f:
        f.write(json.dumps(head)[:-1] + (", " if head else "") + json.dumps(key) + ": [")
        for i, item in enumerate(items):
            f.write((", " if i else "") + json.dumps(item))
        f.write("]}")


def generate_split(root: str, subtype: str, num_questions: int, num_images: int, corpus: Corpus,
                   seed: int) -> dict[str, str]:
    """Write v2_OpenEnded_mscoco_<subtype>_questions.json and v2_mscoco_<subtype>_annotations.json."""
    rng = random.Random(f"{seed}-{subtype}")
    base = 1_000_000 if subtype.startswith("val") else 0
    items = []
    for i in range(num_questions):
        image_id = base + i % num_images + 1
        question_id = image_id * 1000 + i // num_images
        question_type, answer_type, _ = rng.choices(QUESTION_TYPES, cum_weights=corpus.type_weights)[0]
        humans = human_answers(corpus.answer(answer_type, rng), answer_type, corpus, rng)
        items.append((question_id, image_id, corpus.question(question_type, rng), question_type,
                      answer_type, humans))
    paths = {"questions": os.path.join(root, f"v2_OpenEnded_mscoco_{subtype}_questions.json"),
             "annotations": os.path.join(root, f"v2_mscoco_{subtype}_annotations.json")}
    os.makedirs(root, exist_ok=True)
    head = {"info": {"description": "synthetic VQA v2-format corpus"}, "task_type": "Open-Ended",
            "data_type": "mscoco", "data_subtype": subtype, "license": {}}
    _write_json_stream(paths["questions"], head, "questions", (
        {"image_id": im, "question": q, "question_id": qid} for qid, im, q, *_ in items))
    _write_json_stream(paths["annotations"], {"info": head["info"], "data_subtype": subtype,
                                              "license": {}}, "annotations", (
        {"question_type": qt, "multiple_choice_answer": most_common(hs), "image_id": im,
         "answer_type": at, "question_id": qid,
         "answers": [{"answer": h, "answer_confidence": rng.choice(("yes", "yes", "maybe", "no")),
                      "answer_id": k + 1} for k, h in enumerate(hs)]}
        for qid, im, _, qt, at, hs in items))
    return paths


def generate(root: str, scale: float = 1.0, seed: int = 0) -> dict[str, dict[str, str]]:
    """train2014 and val2014 files at `scale` times the real VQA v2 sizes; returns their paths."""
    corpus = Corpus(seed)
    return {subtype: generate_split(root, subtype, max(1, round(q * scale)), max(1, round(i * scale)),
                                    corpus, seed)
            for subtype, (q, i) in FULL_SIZES.items()}


def time_preprocess(files: dict[str, dict[str, str]]) -> tuple[float, float]:
    """Wall and CPU seconds of preprocessing the generated train2014/val2014 into a fresh cache."""
    from updown_vqa.vqa.preprocess import preprocess

    splits = {"train": files["train2014"], "val": files["val2014"]}
    wall, cpu = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as cache_dir:
        preprocess(splits, cache_dir, answer_splits=["train", "val"])
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m updown_vqa.datasets.vqa2_synthetic",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder for the json files")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the real VQA v2 size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time", action="store_true", help="then time preprocessing it")
    args = parser.parse_args(argv)
    if not args.scale > 0:
        parser.error(f"--scale {args.scale}: give a positive fraction of the real size (e.g. 0.01)")
    try:
        files = generate(args.out, args.scale, args.seed)
    except OSError as e:
        fail(f"--out {args.out}: cannot write the json files there ({e.strerror or e})")  # a file system's: 1
    for subtype, paths in files.items():
        print(subtype, paths["questions"], paths["annotations"])
    if args.time:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        wall, cpu = time_preprocess(files)
        print(f"preprocessing: {wall:.1f} s wall, {cpu:.1f} s CPU")


if __name__ == "__main__":
    main()
