"""The HTTP API over a :class:`~imageprism.serve.Catalogue` (FastAPI), and the page at ``/``.

Images arrive as multipart uploads (field ``file``; ``a`` and ``b`` for ``/compare``)
or as the raw request body (then ``id`` and ``k`` go in the query string). Every
error is JSON, ``{"error": <class name>, "message": <text>}``: an
:class:`~imageprism.ImagePrismError` keeps its class name, with status 400 (bad
input), 404 (unknown id), 413 (too many pixels) or 503 (a model not available);
the service's own refusals are ``PayloadTooLarge`` (413), ``Unauthorized`` (401),
``RequestTimeout`` (503) and ``NotFound`` (404).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import importlib.resources
import secrets
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from imageprism._results import SearchHit
from imageprism._version import __version__
from imageprism.errors import (
    DecompressionBombError,
    ImagePrismError,
    InputError,
    InputTooLargeError,
    MissingDependencyError,
    ModelError,
    UnknownIdError,
)
from imageprism.serve._catalogue import Catalogue, Upload

__all__ = ["create_app", "status_for"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]

_HTTP_NAMES = {401: "Unauthorized", 404: "NotFound", 405: "MethodNotAllowed", 413: "PayloadTooLarge", 503: "RequestTimeout"}


def status_for(error: ImagePrismError) -> int:
    """The HTTP status of an imageprism error."""
    if isinstance(error, UnknownIdError):
        return 404
    if isinstance(error, (DecompressionBombError, InputTooLargeError)):
        return 413
    if isinstance(error, (ModelError, MissingDependencyError)):
        return 503
    if isinstance(error, InputError):
        return 400
    return 500


def _error(status: int, name: str, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": name, "message": message}, status_code=status, headers=headers)


class _BodyTooLargeError(Exception):
    pass


class _Limits:
    """ASGI middleware: the request body is cut off past ``max_body`` bytes (413, before any
    decoding), and a request not answered within ``timeout`` seconds gets 503."""

    def __init__(self, app: ASGIApp, *, max_body: int, timeout: float) -> None:
        self.app, self.max_body, self.timeout = app, max_body, timeout

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]], send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False
        too_large = _error(413, "PayloadTooLarge", f"the request body is larger than {self.max_body:,} bytes; "
                           "send fewer or smaller images, or start the server with a larger --max-upload-mb")
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            await too_large(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body:
                raise _BodyTooLargeError
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await asyncio.wait_for(self.app(scope, counted, tracked), self.timeout)
        except _BodyTooLargeError:
            if not started:
                await too_large(scope, receive, send)
        except asyncio.TimeoutError:
            if not started:
                timeout = _error(503, "RequestTimeout", f"the request was not answered within {self.timeout:g} s; "
                                 "retry later (an add may still complete), or raise --timeout")
                await timeout(scope, receive, send)


@dataclasses.dataclass
class _Body:
    files: dict[str, list[Upload]]
    fields: dict[str, list[str]]

    def one(self, field: str) -> Upload:
        found = self.files.get(field, [])
        if len(found) != 1:
            raise InputError(f"send exactly one image in the multipart field {field!r} (got {len(found)})")
        return found[0]

    def integer(self, field: str, default: int, largest: int) -> int:
        values = self.fields.get(field)
        if not values:
            return default
        text = values[-1]
        if not text.strip().isdigit() or not 1 <= int(text) <= largest:
            raise InputError(f"{field}={text!r} is invalid; use an integer from 1 to {largest}")
        return int(text)


async def _read_body(request: Request, catalogue: Catalogue) -> _Body:
    """The uploads and fields of a multipart request, or the raw body as field ``file``."""
    fields: dict[str, list[str]] = {}
    for key, text in request.query_params.multi_items():
        fields.setdefault(key, []).append(text)
    files: dict[str, list[Upload]] = {}
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form(max_files=catalogue.limits.max_files, max_fields=100)
        for key, part in form.multi_items():
            if isinstance(part, str):
                fields.setdefault(key, []).append(part)
            else:
                files.setdefault(key, []).append(Upload(await part.read(), part.filename or key))
    else:
        body = await request.body()
        if body:
            files["file"] = [Upload(body, "request body")]
    return _Body(files, fields)


def _hit(hit: SearchHit) -> dict[str, object]:
    return {**hit.to_dict(), "thumbnail": "/thumbnails/" + urllib.parse.quote(hit.id, safe="")}


_IMAGE_BODY = {
    "requestBody": {
        "content": {
            "multipart/form-data": {"schema": {"type": "object", "properties": {
                "file": {"type": "array", "items": {"type": "string", "format": "binary"}},
                "id": {"type": "array", "items": {"type": "string"}},
                "k": {"type": "integer"},
            }}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
_COMPARE_BODY = {
    "requestBody": {"content": {"multipart/form-data": {"schema": {"type": "object", "properties": {
        "a": {"type": "string", "format": "binary"}, "b": {"type": "string", "format": "binary"},
    }}}}}
}


def create_app(catalogue: Catalogue, *, token: str | None = None) -> FastAPI:
    """The FastAPI application serving ``catalogue``; every endpoint but ``/``, ``/health``
    and the docs requires ``Authorization: Bearer <token>`` when ``token`` is given."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await run_in_threadpool(catalogue.close)

    app = FastAPI(title="imageprism", version=__version__, lifespan=lifespan,
                  description="Image similarity over HTTP: add images to an index, search it, compare two images.")
    app.add_middleware(_Limits, max_body=catalogue.limits.max_upload_bytes, timeout=catalogue.limits.request_timeout)
    bearer = HTTPBearer(auto_error=False)

    async def authorized(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:  # noqa: B008
        if token is not None and (credentials is None or not secrets.compare_digest(credentials.credentials.encode(), token.encode())):
            raise HTTPException(401, "this server needs a token: send 'Authorization: Bearer <token>'",
                                headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(ImagePrismError)
    async def imageprism_error(request: Request, exc: ImagePrismError) -> JSONResponse:
        return _error(status_for(exc), type(exc).__name__, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        name = _HTTP_NAMES.get(exc.status_code, "BadRequest" if exc.status_code == 400 else "HTTPError")
        return _error(exc.status_code, name, str(exc.detail), exc.headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        return _error(500, "InternalError", f"{type(exc).__name__}: the server failed on this request (see its log)")

    def wait(future: Any) -> Awaitable[Any]:
        return asyncio.wrap_future(future)

    guard = [Depends(authorized)]

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(importlib.resources.files("imageprism.serve").joinpath("page.html").read_text(encoding="utf-8"))

    @app.get("/health")
    async def health() -> JSONResponse:
        """``ok`` once the index is loaded; 503 after a failed commit (restart the server)."""
        if catalogue.broken is not None:
            return _error(503, "CommitFailed", f"a write could not be committed ({catalogue.broken}); restart the server")
        return JSONResponse({"status": "ok", "items": len(catalogue.index)})

    @app.get("/stats", dependencies=guard)
    async def stats() -> dict[str, object]:
        """Items, dimensions, weights, the near-duplicate threshold, cache counters, limits and commit counters."""
        cache = catalogue.prism.cache.stats
        return {
            "items": len(catalogue.index),
            "dimensions": list(catalogue.index.dimensions),
            "weights": dict(catalogue.prism.weights),
            "threshold": catalogue.threshold,
            "cache": {**dataclasses.asdict(cache), "hit_rate": cache.hit_rate},
            "limits": dataclasses.asdict(catalogue.limits),
            "commits": dataclasses.asdict(catalogue.commits),
        }

    @app.post("/images", dependencies=guard, status_code=201, openapi_extra=_IMAGE_BODY)
    async def add_images(request: Request) -> dict[str, object]:
        """Add one or more images (``file`` fields, optional ``id`` fields in the same order);
        answered once they are on disk, each with its near-duplicates already indexed."""
        body = await _read_body(request, catalogue)
        uploads = body.files.get("file", [])
        if not uploads:
            raise InputError("no image: send it in the multipart field 'file' or as the request body")
        ids = body.fields.get("id")
        if ids is not None and len(ids) != len(uploads):
            raise InputError(f"got {len(ids)} 'id' fields for {len(uploads)} files; give one id per file, or none")
        prepared = await asyncio.gather(*(wait(catalogue.read(functools.partial(catalogue.prepare, u))) for u in uploads))
        items = [(None if ids is None else ids[i], embedding, thumb) for i, (embedding, thumb) in enumerate(prepared)]
        added = await wait(catalogue.add(items))
        return {"added": [{"id": a.id, "duplicates": [_hit(h) for h in a.duplicates]} for a in added]}

    @app.post("/search", dependencies=guard, openapi_extra=_IMAGE_BODY)
    async def search(request: Request) -> dict[str, object]:
        """The ``k`` (default 10) indexed items most similar to the uploaded ``file``."""
        body = await _read_body(request, catalogue)
        upload, k = body.one("file"), body.integer("k", 10, catalogue.limits.max_k)
        hits = await wait(catalogue.read(lambda: catalogue.search(upload, k)))
        return {"hits": [_hit(h) for h in hits]}

    @app.post("/compare", dependencies=guard, openapi_extra=_COMPARE_BODY)
    async def compare(request: Request) -> dict[str, object]:
        """Two uploads (fields ``a`` and ``b``) scored on every dimension."""
        body = await _read_body(request, catalogue)
        a, b = body.one("a"), body.one("b")
        result = await wait(catalogue.read(lambda: catalogue.compare(a, b)))
        return result.to_dict()

    @app.get("/images/{item_id:path}", dependencies=guard)
    async def get_image(item_id: str) -> dict[str, object]:
        """An indexed item: its id, the shapes of its stored embeddings, its thumbnail's URL."""
        catalogue.require(item_id)
        embedding = await run_in_threadpool(catalogue.index.embedding, item_id)
        return {
            "id": item_id,
            "embeddings": {name: None if e is None else {"shape": list(e.shape), "dtype": str(e.dtype)}
                           for name, e in embedding.items()},
            "thumbnail": "/thumbnails/" + urllib.parse.quote(item_id, safe=""),
        }

    @app.delete("/images/{item_id:path}", dependencies=guard)
    async def delete_image(item_id: str) -> dict[str, object]:
        """Remove an item; answered once the removal is on disk."""
        await wait(catalogue.remove(item_id))
        return {"deleted": item_id, "items": len(catalogue.index)}

    @app.get("/thumbnails/{item_id:path}", dependencies=guard, response_class=Response)
    async def thumbnail(item_id: str) -> Response:
        """The item's JPEG thumbnail (items added through the service have one)."""
        catalogue.require(item_id)
        path = catalogue.thumbnail_path(item_id)
        if not path.is_file():
            raise HTTPException(404, f"item {item_id!r} has no thumbnail (it was not added through the service)")
        return Response(await run_in_threadpool(path.read_bytes), media_type="image/jpeg")

    return app
