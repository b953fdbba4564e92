"""Serve the demo page: `python -m updown_vqa.demo ckpt=PATH [port=7860 host=127.0.0.1]` (conf/demo.yaml)."""

from __future__ import annotations

from omegaconf import DictConfig

from updown_vqa.core.cli import hydra_command
from updown_vqa.core.errors import UpdownError
from updown_vqa.core.settings import Number, OneOf, check_group

SETTINGS = {"split": OneOf(("train", "val", "test")), "num_images": Number("int", 0, 10**4),
            "top_k": Number("int", 1, 10**4), "port": Number("int", 0, 65535),
            "max_upload_mb": Number("float", 0.001, 10**4), "max_pixels": Number("int", 1, 10**10),
            "max_question_chars": Number("int", 1, 10**5)}


@hydra_command("demo")
def main(cfg: DictConfig) -> None:
    if not cfg.ckpt:
        raise UpdownError("ckpt=PATH is required: a checkpoint of python -m updown_vqa.train (VQA or task=caption)")
    check_group(cfg, "", SETTINGS)
    import matplotlib

    matplotlib.use("Agg")  # pictures are drawn off-screen
    from updown_vqa.demo.app import listen, serve
    from updown_vqa.demo.session import Demo

    sock = listen(cfg.host, int(cfg.port))  # a busy port fails before the model is loaded
    split = cfg.data.get(cfg.split) or {}
    demo = Demo(cfg.ckpt, cfg.images, cfg.features or split.get("features"), cfg.weights, cfg.device,
                cfg.num_images, cfg.top_k, cfg.max_upload_mb, cfg.max_pixels, cfg.max_question_chars)
    serve(demo, sock)


if __name__ == "__main__":
    main()
