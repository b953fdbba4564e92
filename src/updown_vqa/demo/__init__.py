"""A local demo page: ask a checkpoint about one of the data's images or an uploaded one, and see the
top answers, the question's tokens as the model read them and where it attended (docs/demo.md).
Served by `python -m updown_vqa.demo ckpt=PATH` (a Starlette app on uvicorn, static files, no CDN)."""
