"""The FastAPI application: OpenAI routes over a :class:`~lmforge.serve.service.ChatService`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse

from lmforge import __version__
from lmforge.serve.auth import require_api_key
from lmforge.serve.openai_errors import ApiError, engine_error, error_body, install_error_handlers
from lmforge.serve.protocol import ChatCompletionRequest, CompletionRequest
from lmforge.serve.service import ChatService

logger = logging.getLogger(__name__)
T = TypeVar("T")
DISCONNECT_POLL_S = 0.2


def create_app(service: ChatService, *, api_key: str | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await service.engine.start()
        try:
            yield
        finally:
            await service.engine.close()

    app = FastAPI(title="lmforge", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    install_error_handlers(app)
    auth = [Depends(require_api_key(api_key))]

    @app.get("/health")
    async def health() -> Any:
        engine = service.engine
        inputs = ["text", *sorted(engine.media.kinds)] if engine.media is not None else ["text"]
        body = {"status": "ok", "model": service.model_name, "inputs": inputs, **engine.stats()}
        failure = engine.failure
        if failure is not None:
            return JSONResponse({**body, "status": "error", "error": failure}, status_code=503)
        return body

    @app.get("/v1/models", dependencies=auth)
    async def list_models() -> dict[str, Any]:
        card = {
            "id": service.model_name,
            "object": "model",
            "created": service.created,
            "owned_by": "lmforge",
        }
        return {"object": "list", "data": [card]}

    @app.get("/v1/models/{model_id:path}", dependencies=auth)
    async def get_model(model_id: str) -> dict[str, Any]:
        service.check_model(model_id)
        return {
            "id": service.model_name,
            "object": "model",
            "created": service.created,
            "owned_by": "lmforge",
        }

    @app.post("/v1/chat/completions", dependencies=auth)
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
        if body.stream:
            return _sse(await _unless_disconnected(request, service.chat_stream(body)))
        return JSONResponse(await _unless_disconnected(request, service.chat(body)))

    @app.post("/v1/completions", dependencies=auth)
    async def completions(body: CompletionRequest, request: Request) -> Any:
        if body.stream:
            return _sse(await _unless_disconnected(request, service.completion_stream(body)))
        return JSONResponse(await _unless_disconnected(request, service.completion(body)))

    return app


class _ClientGone(Exception):
    pass


async def _unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Run ``work``, cancelling it (and so its generation) if the client hangs up meanwhile."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if done:
                return task.result()
            if await request.is_disconnected():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
                logger.info("client disconnected; generation cancelled")
                raise ApiError(499, "client closed the request")
    finally:
        if not task.done():
            task.cancel()


def _sse(chunks: AsyncIterator[dict[str, Any]]) -> EventSourceResponse:
    """Server-sent events: one JSON chunk per event, an error event if generation fails, then [DONE]."""

    async def events() -> AsyncIterator[str]:
        try:
            async for chunk in chunks:
                yield json.dumps(chunk, ensure_ascii=False)
        except ApiError as exc:
            yield json.dumps(exc.body())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.exception("stream failed")
            error = engine_error(exc)
            yield json.dumps(error_body(error.status, f"generation failed: {error.message}", code=error.code))
        finally:
            with contextlib.suppress(Exception):
                await chunks.aclose()  # type: ignore[attr-defined]
        yield "[DONE]"

    return EventSourceResponse(events(), sep="\n", ping=15)
