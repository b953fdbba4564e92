"""Untrained checkpoints of the tiny shapes data for the demo's tests, and a running demo server."""

from __future__ import annotations

import os
import socket
import threading
import time

import matplotlib
import uvicorn
from conftest import save_module

from updown_vqa.captioning.module import UpDownCaptioning
from updown_vqa.demo.app import build_app
from updown_vqa.demo.session import Demo
from updown_vqa.features.store import FeatureStore
from updown_vqa.vqa.module import UpDownVQA

matplotlib.use("Agg")
ANSWERS = ["red", "blue", "green", "yes", "no", "2", "3", "circle"]
WORDS = ["<pad>", "<unk>", "what", "color", "is", "the", "circle", "how", "many", "objects"]


def shapes_paths(data_dir: str, split: str = "val") -> tuple[str, str]:
    """The tiny data's image folder and feature store of a split."""
    root = os.path.join(data_dir, "shapes")
    return os.path.join(root, "images", split), os.path.join(root, f"shapes_{split}_features.h5")


def untrained_checkpoint(data_dir: str, folder, kind: str = "vqa") -> str:
    """An untrained VQA (or captioning) checkpoint of the tiny data's features, as `train` saves it."""
    store = FeatureStore(shapes_paths(data_dir)[1])
    attrs, dim = dict(store.attrs), store.feature_dim
    if kind == "vqa":
        model = UpDownVQA(WORDS, ANSWERS, feature_dim=dim, embed_dim=8, hidden_dim=16, feature_attrs=attrs)
    else:
        model = UpDownCaptioning(["<pad>", "<unk>", "<bos>", "<eos>", "a", "red", "circle"], dim, embed_dim=8,
                                 hidden_dim=16, attention_dim=8, max_decode_length=5, feature_attrs=attrs)
    return save_module(model, os.path.join(folder, f"{kind}.ckpt"))


class Server:
    """The demo app served by uvicorn on a free port of 127.0.0.1, in a thread."""

    def __init__(self, demo: Demo):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(build_app(demo), log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started and time.time() < deadline:
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()
