"""``lmforge api cfg.yaml [key=value ...]``: load the model once and serve it over HTTP.

The address comes from ``API_HOST`` (127.0.0.1 by default, so nothing outside this machine
can reach it; set ``API_HOST=0.0.0.0`` to accept other machines, ideally with ``API_KEY``)
and ``API_PORT``. The line ``lmforge api: serving MODEL at http://HOST:PORT/v1`` is printed
once the socket accepts connections.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from lmforge.config import Config, load_config
from lmforge.config.environment import ServerEnvironment, server_environment
from lmforge.errors import ConfigError
from lmforge.infer.backends import create_engine
from lmforge.infer.prompting import PromptBuilder
from lmforge.serve.app import create_app
from lmforge.serve.media_fetch import MediaPolicy
from lmforge.serve.service import ChatService

logger = logging.getLogger(__name__)
ENGINE_CHECK_S = 1.0  # how often the server looks whether its engine died


def served_model_name(config: Config, env_name: str | None) -> str:
    """``API_MODEL_NAME``, else the model folder's name (plus the last adapter's, when one is applied)."""
    if env_name:
        return env_name
    base = Path(str(config.model.model_name_or_path)).name or str(config.model.model_name_or_path)
    adapters = config.model.adapter_name_or_path or []
    return f"{base}+{Path(adapters[-1]).name}" if adapters else base


def build_app(config: Config) -> tuple[FastAPI, ChatService, ServerEnvironment]:
    env = server_environment()
    media_dir = Path(config.data.media_dir).expanduser() if config.data.media_dir else None
    if media_dir is not None and not media_dir.is_dir():
        raise ConfigError(f"config key 'media_dir' is {str(media_dir)!r}, which is not a folder")
    engine = create_engine(config)  # checks that need no model come first: loading takes a while
    engine.claim_cpu_threads()
    service = ChatService(
        engine,
        PromptBuilder.from_config(config, engine.tokenizer),
        model_name=served_model_name(config, env.model_name),
        defaults=config.generating,
        media=MediaPolicy(media_dir=media_dir, allow_remote=config.serving.allow_remote_media),
    )
    return create_app(service, api_key=env.api_key), service, env


def main(argv: list[str]) -> int:
    config = load_config(argv)
    app, service, env = build_app(config)
    server = uvicorn.Server(
        uvicorn.Config(
            app, host=env.host, port=env.port, log_level="warning", access_log=False, lifespan="on"
        )
    )

    async def serve() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.05)
        if server.started:
            host = f"[{env.host}]" if ":" in env.host else env.host
            print(f"lmforge api: serving {service.model_name} at http://{host}:{env.port}/v1", flush=True)
            if service.engine.media is not None:
                logger.info(
                    "the model takes text and %s input", ", ".join(sorted(service.engine.media.kinds))
                )
            if env.host in ("0.0.0.0", "::") and not env.api_key:
                logger.warning(
                    "listening on all interfaces without API_KEY: anyone who reaches this port can use it"
                )
        while not task.done():
            await asyncio.wait({task}, timeout=ENGINE_CHECK_S)
            failure = service.engine.failure
            if failure is not None and not task.done():
                failed.append(failure)
                server.should_exit = True
        await task

    failed: list[str] = []
    asyncio.run(serve())
    if not server.started:
        print(
            f"lmforge api: could not listen on {env.host}:{env.port} (see the error above)", file=sys.stderr
        )
        return 1
    if failed:
        print(f"lmforge api: the engine failed and the server stopped: {failed[0]}", file=sys.stderr)
        return 1
    return 0
