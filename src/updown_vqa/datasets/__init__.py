"""Dataset sources written in the official VQA v2 file formats."""
