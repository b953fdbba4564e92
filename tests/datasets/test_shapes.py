"""The built-in dataset: official VQA v2 formats, deterministic, balanced answers, image ids in names."""

import json
import os
import random
import re
from collections import Counter

from updown_vqa.datasets.shapes import (
    ShapesBuilder,
    candidate_questions,
    generate_split,
    sample_scene,
    split_files,
)


def test_files_follow_the_vqa_v2_formats(data_dir):
    files = split_files(os.path.join(data_dir, "shapes"), "train")
    questions = json.load(open(files["questions"]))["questions"]
    annotations = json.load(open(files["annotations"]))["annotations"]
    assert len(questions) == len(annotations) > 100
    assert {q["question_id"] for q in questions} == {a["question_id"] for a in annotations}
    for a in annotations:
        assert len(a["answers"]) == 10 and a["answer_type"] in ("yes/no", "number", "other")
        assert {"question_type", "multiple_choice_answer", "image_id"} <= a.keys()
    names = os.listdir(files["images"])
    ids = {int(re.search(r"(\d+)\.png$", n).group(1)) for n in names}
    assert ids == {q["image_id"] for q in questions}
    assert all(re.fullmatch(r"shapes_train_\d{12}\.png", n) for n in names)


def test_generation_is_deterministic(tmp_path):
    for name in ("a", "b"):
        generate_split(str(tmp_path / name), "val", 1, 6, 48, seed=3, num_proposals=8)
    for key in ("questions", "annotations", "scenes", "proposals", "captions"):
        a, b = (open(split_files(str(tmp_path / n), "val")[key]).read() for n in "ab")
        assert a == b, key
    image = sorted(os.listdir(tmp_path / "a" / "images" / "val"))[0]
    assert (tmp_path / "a/images/val" / image).read_bytes() == (tmp_path / "b/images/val" / image).read_bytes()


def test_answers_are_balanced_within_each_template(tmp_path):
    generate_split(str(tmp_path), "train", 0, 400, 48, seed=0, num_proposals=8)
    questions = json.load(open(split_files(str(tmp_path), "train")["questions"]))["questions"]
    annotations = {a["question_id"]: a for a in json.load(open(split_files(str(tmp_path), "train")["annotations"]))["annotations"]}
    by_template = {}
    for q in questions:
        by_template.setdefault(q["template"], Counter())[annotations[q["question_id"]]["multiple_choice_answer"]] += 1
    for template in ("color", "shape", "exist"):
        counts = by_template[template]
        assert max(counts.values()) <= 1.3 * min(counts.values()), (template, counts)
    # a question-only model's best guess per template stays near chance
    for template, counts in by_template.items():
        assert max(counts.values()) / sum(counts.values()) < 0.55, (template, counts)


def test_questions_are_answerable_from_the_scene():
    scene = sample_scene(random.Random(1), 128)
    for template, candidates in candidate_questions(scene, 128).items():
        for text, _, answer in candidates:
            if template == "count" and text.startswith("how many") and text.split()[2] in {o.color for o in scene}:
                assert int(answer) == sum(o.color == text.split()[2] for o in scene)
            if template == "exist":
                color, shape = text[len("is there a "):-1].split()
                assert (answer == "yes") == any(o.color == color and o.shape == shape for o in scene)


def test_a_complete_dataset_is_used_as_it_is_without_writing_a_lock(data_dir):
    """A shared copy on a read-only mount works: the builder writes nothing when nothing is missing."""
    from conftest import TINY_SHAPES

    root = os.path.join(data_dir, "shapes")
    lock = os.path.join(root, ".build.lock")
    if os.path.exists(lock):
        os.remove(lock)
    before = {name: os.stat(os.path.join(root, name)).st_mtime_ns for name in os.listdir(root)}
    ShapesBuilder(root, **TINY_SHAPES)()
    assert not os.path.exists(lock)
    assert {name: os.stat(os.path.join(root, name)).st_mtime_ns for name in os.listdir(root)} == before


def test_images_only_build_makes_no_features_and_a_later_build_adds_them(tmp_path):
    """data=shapes_e2e builds images and questions alone; data=shapes then extracts the features."""
    root = str(tmp_path / "shapes")
    sizes = {"num_train_images": 6, "num_val_images": 3, "image_size": 32}
    ShapesBuilder(root, with_features=False, **sizes)()
    files = split_files(root, "val")
    assert os.path.isfile(files["questions"]) and len(os.listdir(files["images"])) == 3
    assert not os.path.exists(files["features"])
    ShapesBuilder(root, **sizes)()
    assert os.path.isfile(files["features"])
