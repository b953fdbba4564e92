"""The demo page in a real browser (headless Chromium): upload an image, ask, read the answers and find
the attention picture; a broken upload shows its message on the page."""


import numpy as np
import pytest
from demo_fixtures import Server, shapes_paths, untrained_checkpoint
from PIL import Image

from updown_vqa.demo.browser import Page, chromium_missing
from updown_vqa.demo.session import Demo
from updown_vqa.vqa.inference import answer_image

MISSING = chromium_missing()


@pytest.mark.slow
@pytest.mark.skipif(MISSING is not None, reason=f"no headless Chromium here: {MISSING}")
def test_upload_ask_and_see_the_answers_and_the_attention(data_dir, tmp_path):
    images, features = shapes_paths(data_dir)
    demo = Demo(untrained_checkpoint(data_dir, tmp_path), images, features, num_images=4)
    photo = str(tmp_path / "photo.png")
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(photo)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    question = "what color is the zebra?"
    with Server(demo) as server, Page(server.url) as page:
        page.choose(upload=photo)
        shown = page.ask(question)
        assert shown["error"] == "" and shown["attention_width"] == 384
        expected = answer_image(demo.ckpt, photo, question)
        assert [a for a, _ in shown["answers"]] == [a for a, _ in expected]
        assert np.allclose([s for _, s in shown["answers"]], [s for _, s in expected], atol=5e-4)
        assert shown["tokens"] == [("what", False), ("color", False), ("is", False), ("the", False), ("zebra", True)]
        page.choose(image_id=demo.info()["images"][2])
        assert len(page.ask("how many objects?")["answers"]) == 5
        page.choose(upload=str(broken))
        assert "not an image file" in page.ask(question)["error"]
