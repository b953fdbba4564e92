"""The demo's endpoints without a browser: the answers are `answer`'s, and untrusted uploads and
questions get a message while the server goes on answering."""

import base64
import io
import os
import shlex
import socket

import numpy as np
import pytest
from conftest import compose_config, run_module
from demo_fixtures import shapes_paths, untrained_checkpoint
from PIL import Image
from starlette.testclient import TestClient

from updown_vqa.demo.app import build_app
from updown_vqa.demo.session import Demo
from updown_vqa.extraction.one_image import image_features
from updown_vqa.features.loading import StoreSet
from updown_vqa.vqa.inference import answer_image


@pytest.fixture(scope="module")
def vqa_demo(data_dir, tmp_path_factory):
    images, features = shapes_paths(data_dir)
    ckpt = untrained_checkpoint(data_dir, tmp_path_factory.mktemp("demo"))
    return Demo(ckpt, images, features, num_images=4, max_upload_mb=1, max_pixels=4_000_000)


def upload(path_or_bytes) -> str:
    data = path_or_bytes if isinstance(path_or_bytes, bytes) else open(path_or_bytes, "rb").read()
    return "data:image/png;base64," + base64.b64encode(data).decode()


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def as_pairs(result: dict) -> list:
    return [(a["answer"], a["score"]) for a in result["answers"]]


def test_the_page_answers_as_the_answer_command_does(vqa_demo, data_dir):
    client = TestClient(build_app(vqa_demo))
    info = client.get("/api/info").json()
    assert info["kind"] == "vqa" and len(info["images"]) == 4
    image_id = info["images"][1]
    image = vqa_demo.images[image_id]
    question = "what color is the zebra?"
    uploaded = client.post("/api/ask", json={"upload": upload(image), "question": question}).json()
    expected = answer_image(vqa_demo.ckpt, image, question)  # grid cells: no boxes given, as the page's upload
    assert as_pairs(uploaded) == [(a, round(s, 5)) for a, s in expected] and len(expected) == 5
    assert [t["word"] for t in uploaded["tokens"] if not t["known"]] == ["zebra"]
    assert uploaded["attention"].startswith("data:image/png;base64,")
    picture = Image.open(io.BytesIO(base64.b64decode(uploaded["attention"].partition(",")[2])))
    assert max(picture.size) == 384
    stored = StoreSet([shapes_paths(data_dir)[1]]).read([image_id])
    boxes = stored["boxes"][0, : stored["num_boxes"][0]].tolist()
    chosen = client.post("/api/ask", json={"image_id": image_id, "question": question}).json()
    assert as_pairs(chosen) == [(a, round(s, 5)) for a, s in answer_image(vqa_demo.ckpt, image, question, boxes)]
    assert chosen["regions"] == f"{len(boxes)} regions of the feature store"
    assert "boxes=[[" in chosen["command"] and "boxes" not in uploaded["command"]


def test_long_questions_are_refused_and_the_words_past_the_limit_marked(vqa_demo):
    client = TestClient(build_app(vqa_demo))
    image_id = vqa_demo.info()["images"][0]
    refused = client.post("/api/ask", json={"image_id": image_id, "question": "what " * 100})
    assert refused.status_code == 400 and "at most 300" in refused.json()["error"]
    result = client.post("/api/ask", json={"image_id": image_id, "question": "what color " * 10}).json()
    assert [t["read"] for t in result["tokens"]] == [True] * 14 + [False] * 6  # max_question_length 14


BIG = Image.new("1", (8000, 6250))  # 50 megapixels; its PNG is a few kB
NOISE = png(Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)))


@pytest.mark.parametrize("body, status, message", [
    ({"upload": upload(b"GIF89a this is not an image"), "question": "what?"}, 400, "not an image file"),
    ({"upload": upload(b"%PDF-1.4\n"), "question": "what?"}, 400, "not an image file"),
    ({"upload": "not base64 at all!", "question": "what?"}, 400, "not valid base64"),
    ({"upload": upload(NOISE[: len(NOISE) // 2]), "question": "what?"}, 400, "could not be decoded"),
    ({"upload": upload(png(BIG)), "question": "what?"}, 413, "50.0 megapixels; this demo takes at most 4.0"),
    ({"upload": upload(os.urandom(2 << 20)), "question": "what?"}, 413, "larger than 1 MB"),
    ({"image_id": 1, "question": "what?"}, 400, "not one of the page's images"),
    ({"image_id": "../../etc/passwd", "question": "what?"}, 400, "not one of the page's images"),
    ({"upload": upload(png(Image.new("RGB", (64, 64)))), "question": "   "}, 400, "type a question"),
], ids=["garbage", "pdf", "base64", "truncated", "50-megapixels", "too-large", "unknown-id", "path", "empty"])
def test_bad_requests_get_a_message_and_the_server_goes_on(vqa_demo, body, status, message):
    client = TestClient(build_app(vqa_demo), raise_server_exceptions=False)
    refused = client.post("/api/ask", json=body)
    assert refused.status_code == status and message in refused.json()["error"]
    good = client.post("/api/ask", json={"upload": upload(png(Image.new("RGB", (64, 48), "blue"))),
                                         "question": "what color is the circle?"})
    assert good.status_code == 200 and len(good.json()["answers"]) == 5


def test_a_body_that_is_not_json_or_too_large_is_refused(vqa_demo):
    client = TestClient(build_app(vqa_demo))
    assert "not JSON" in client.post("/api/ask", content=b"\x80\x81 pickle?").json()["error"]
    huge = client.post("/api/ask", content=b"x" * (2 << 20))
    assert huge.status_code == 413 and "larger than 1 MB" in huge.json()["error"]
    assert client.get("/api/images/12345").status_code == 404


def test_a_captioning_checkpoint_shows_its_caption_and_attention_per_word(data_dir, tmp_path):
    images, features = shapes_paths(data_dir)
    demo = Demo(untrained_checkpoint(data_dir, tmp_path, "caption"), images, features, num_images=2)
    client = TestClient(build_app(demo))
    assert client.get("/api/info").json()["kind"] == "caption"
    result = client.post("/api/ask", json={"image_id": demo.info()["images"][0]}).json()
    assert result["kind"] == "caption" and len(result["words"]) == len(result["caption"].split())
    assert all(w["attention"].startswith("data:image/png;base64,") for w in result["words"])


@pytest.mark.slow
def test_a_busy_port_is_one_error_line_before_the_model_loads(vqa_demo, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = run_module("updown_vqa.demo", f"ckpt={vqa_demo.ckpt}", f"port={port}", f"paths.log_dir={tmp_path}",
                          "images=null")
    lines = [line for line in done.stderr.splitlines() if "error: " in line]
    assert done.returncode == 1 and len(lines) == 1 and f"port={port}: cannot listen there" in lines[0]
    assert "Traceback" not in done.stderr


def test_stored_regions_equal_the_features_recomputed_from_them(vqa_demo, data_dir):
    """Why choosing a data image and passing its stored boxes to `answer` agree (mode boxes)."""
    image_id = vqa_demo.info()["images"][0]
    stored = StoreSet([shapes_paths(data_dir)[1]]).read([image_id])
    count = stored["num_boxes"][0]
    # the function answer makes an image's features with
    boxes, features = image_features(vqa_demo.model.hparams.feature_attrs, vqa_demo.images[image_id],
                                     stored["boxes"][0, :count].tolist())
    np.testing.assert_allclose(features.numpy(), stored["features"][0, :count], rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_the_command_the_page_shows_prints_the_same_answers(vqa_demo, tmp_path):
    client = TestClient(build_app(vqa_demo))
    result = client.post("/api/ask", json={"image_id": vqa_demo.info()["images"][3],
                                           "question": "what's the color of the circle?"}).json()
    words = shlex.split(result["command"])
    assert words[:3] == ["python", "-m", "updown_vqa.answer"]
    done = run_module("updown_vqa.answer", *words[3:], f"paths.log_dir={tmp_path}")
    assert done.returncode == 0, done.stderr[-2000:]
    printed = [(line.split()[0], float(line.split()[1])) for line in done.stdout.strip().splitlines()[1:]]
    assert [a for a, _ in printed] == [a["answer"] for a in result["answers"]]
    assert np.allclose([s for _, s in printed], [a["score"] for a in result["answers"]], atol=1e-3)


def test_the_config_binds_to_this_machine_and_reads_the_split_s_regions(data_dir):
    cfg = compose_config([f"paths.data_dir={data_dir}", "ckpt=model.ckpt", "split=train"], config_name="demo")
    assert (cfg.host, cfg.port, cfg.features) == ("127.0.0.1", 7860, None)
    assert cfg.images == shapes_paths(data_dir, "train")[0]
    assert cfg.data[cfg.split].features == shapes_paths(data_dir, "train")[1]
