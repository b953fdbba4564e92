"""Bottom-up and top-down attention for VQA and captioning (Anderson et al. 2018; Teney et al. 2018)."""

from updown_vqa.core.errors import UpdownError

__version__ = "0.1.0"
__all__ = ["UpdownError", "__version__"]
