"""The project root, for configs that must resolve the same from any working directory."""

from __future__ import annotations

import os

from omegaconf import OmegaConf


def project_root() -> str:
    """The checkout that holds `conf/` (an editable install), else the working directory."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # src/updown_vqa
    root = os.path.dirname(os.path.dirname(package))
    return root if os.path.isdir(os.path.join(root, "conf")) else os.getcwd()


def config_dir() -> str:
    return os.path.join(project_root(), "conf")


if not OmegaConf.has_resolver("project_root"):
    OmegaConf.register_new_resolver("project_root", project_root)
