"""Serve the demo page: `python -m updown_vqa.demo ckpt=PATH [port=7860 host=127.0.0.1]` (conf/demo.yaml)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from updown_vqa.core.cli import command
from updown_vqa.core.errors import UpdownError
from updown_vqa.core.paths import config_dir


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="demo")
@command
def main(cfg: DictConfig) -> None:
    import matplotlib

    matplotlib.use("Agg")  # pictures are drawn off-screen
    from updown_vqa.demo.app import listen, serve
    from updown_vqa.demo.session import Demo

    if not cfg.ckpt:
        raise UpdownError("ckpt=PATH is required: a checkpoint of python -m updown_vqa.train (VQA or task=caption)")
    sock = listen(cfg.host, int(cfg.port))  # a busy port fails before the model is loaded
    split = cfg.data.get(cfg.split) or {}
    demo = Demo(cfg.ckpt, cfg.images, cfg.features or split.get("features"), cfg.weights, cfg.device,
                cfg.num_images, cfg.top_k, cfg.max_upload_mb, cfg.max_pixels, cfg.max_question_chars)
    serve(demo, sock)


if __name__ == "__main__":
    main()
