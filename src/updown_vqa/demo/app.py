"""The demo's web app (Starlette): the static page, the data's images and /api/ask. Every refused
request is a JSON {"error": message} the page shows; a failure inside is logged and answered the same
way, and the server goes on."""

from __future__ import annotations

import logging
import os

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from updown_vqa.core.errors import UpdownError
from updown_vqa.demo.session import Demo
from updown_vqa.demo.uploads import RequestError, parse_body

log = logging.getLogger(__name__)
STATIC = os.path.join(os.path.dirname(__file__), "static")
HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data:", "X-Content-Type-Options": "nosniff"}


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestError(f"the upload is larger than {limit / 2**20:.0f} MB; send a smaller image", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(f"the upload is larger than {limit / 2**20:.0f} MB; send a smaller image", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def build_app(demo: Demo) -> Starlette:
    """The app serving `demo`."""
    body_limit = demo.limits["max_upload_bytes"] * 4 // 3 + 2**16  # base64 of the largest upload, and the question

    async def index(request: Request) -> Response:
        return FileResponse(os.path.join(STATIC, "index.html"), headers=HEADERS)

    async def info(request: Request) -> Response:
        return JSONResponse(demo.info(), headers=HEADERS)

    async def image(request: Request) -> Response:
        path = demo.images.get(request.path_params["image_id"])
        if path is None:
            return JSONResponse({"error": "no such image"}, status_code=404)
        return FileResponse(path, headers=HEADERS)

    async def ask(request: Request) -> Response:
        try:
            payload = parse_body(await read_body(request, body_limit))
            return JSONResponse(await run_in_threadpool(demo.ask, payload), headers=HEADERS)
        except RequestError as e:
            return JSONResponse({"error": str(e)}, status_code=e.status, headers=HEADERS)
        except UpdownError as e:  # the image or checkpoint cannot be used as asked
            return JSONResponse({"error": str(e)}, status_code=422, headers=HEADERS)
        except Exception as e:  # a bug: logged with its traceback; the page says so, the server goes on
            log.exception("/api/ask failed")
            return JSONResponse({"error": f"the server failed on this request ({type(e).__name__}); "
                                          "see its log"}, status_code=500, headers=HEADERS)

    return Starlette(routes=[
        Route("/", index), Route("/api/info", info), Route("/api/images/{image_id:int}", image),
        Route("/api/ask", ask, methods=["POST"]), Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ])


def listen(host: str = "127.0.0.1", port: int = 7860):
    """A socket bound to host:port (port 0: any free one); one that cannot be bound is one UpdownError."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise UpdownError(f"host={host} port={port}: cannot listen there ({e.strerror}); pick another port=") from None
    return sock


def serve(demo: Demo, sock) -> None:
    """Serve the page on the bound socket until Ctrl-C."""
    import uvicorn

    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"demo of {demo.kind} checkpoint {demo.ckpt}: http://{shown}:{port}/ (Ctrl-C stops it)", flush=True)
    uvicorn.Server(uvicorn.Config(build_app(demo), log_level="warning")).run(sockets=[sock])
