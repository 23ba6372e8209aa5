"""The FastAPI app factory: lifespan (engine, token2wav, tokenizer), routes, static demo page."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from engine.types import Engine
from server.metrics import Metrics
from server.settings import Settings
from tokenizer_audio.types import Token2wavService

log = logging.getLogger("server.app")

TEST_CHECKPOINT_KEY = "stepaudio2_test_checkpoint"


@dataclass
class Services:
    """What the lifespan builds: the model side the sessions share."""

    engine: Engine
    token2wav: Token2wavService
    tokenizer: Any  # a transformers tokenizer of the checkpoint
    special: Any  # engine.tokens.SpecialTokens


# Tests pass a builder returning fakes; production builds the real engine and token2wav.
ServicesBuilder = Callable[[Settings], Awaitable[Services]]


@dataclass
class GatewayState:
    """Everything on `app.state.gateway`; sessions register here (limit, shutdown, metrics)."""

    settings: Settings
    metrics: Metrics
    services: Services | None = None
    sessions: set[Any] = field(default_factory=set)
    started_at: float = field(default_factory=time.monotonic)
    test_checkpoint: dict[str, Any] | None = None
    vad: Any = None  # server.vad.SileroVad, shared by every session's turn detector


async def build_services(settings: Settings) -> Services:
    """The real thing: tokenizer, engine (embedded vLLM or remote) and token2wav service."""
    from engine.factory import create_engine
    from engine.tokens import SpecialTokens, load_tokenizer
    from tokenizer_audio.service import create_token2wav_service

    model_dir = settings.model
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"no checkpoint at {model_dir} (config.json missing)")
    log.info("loading tokenizer", extra={"model_dir": str(model_dir)})
    tokenizer = await asyncio.to_thread(load_tokenizer, model_dir)
    special = SpecialTokens.from_tokenizer(tokenizer)
    log.info("starting token2wav", extra={"device": settings.device,
                                          "precision": settings.token2wav_precision})
    token2wav = await create_token2wav_service(
        model_dir / "token2wav",
        voices_dir=settings.voices_dir,
        device=settings.device,
        threads=settings.token2wav_threads,
        precision=settings.token2wav_precision,
    )
    log.info("starting engine", extra={"engine_urls": settings.engine_urls})
    try:
        engine = await create_engine(
            model_dir, engine_urls=list(settings.engine_urls), **engine_options(settings)
        )
    except BaseException:
        await token2wav.close()
        raise
    return Services(engine=engine, token2wav=token2wav, tokenizer=tokenizer, special=special)


def engine_options(settings: Settings) -> dict[str, Any]:
    """The settings the configured engine takes (remote servers or the embedded vLLM)."""
    if settings.engine_urls:
        return {
            "startup_timeout": settings.engine_startup_timeout_s,
            "health_interval": settings.engine_health_interval_s,
        }
    options: dict[str, Any] = {
        "max_model_len": settings.engine_max_model_len,
        "max_num_seqs": settings.engine_max_num_seqs,
        "kv_cache_gib": settings.engine_kv_cache_gib,
    }
    if settings.engine_enforce_eager is not None:
        options["enforce_eager"] = settings.engine_enforce_eager
    return options


def read_test_marker(model_dir: Path) -> dict[str, Any] | None:
    """The random-weights marker a test checkpoint's config.json carries, if any."""
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return None
    marker = config.get(TEST_CHECKPOINT_KEY)
    return marker if isinstance(marker, dict) else ({"random_weights": True} if marker else None)


def web_dir(settings: Settings) -> Path | None:
    """The demo page folder: settings override, else `clients/web` beside the clients package."""
    if settings.static_dir is not None:
        return settings.static_dir
    try:
        import clients
    except ImportError:
        return None
    folder = Path(clients.__file__).resolve().parent / "web"
    return folder if (folder / "index.html").is_file() else None


def get_gateway(request: Request) -> GatewayState:
    return request.app.state.gateway


GatewayDep = Annotated[GatewayState, Depends(get_gateway)]


def create_app(settings: Settings, *, services_builder: ServicesBuilder | None = None) -> FastAPI:
    """A gateway app for `settings`; nothing is loaded until the lifespan starts."""
    from server.realtime import close_all_sessions
    from server.realtime import router as realtime_router
    from server.voices_api import router as voices_router

    builder = services_builder or build_services

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gateway = GatewayState(settings=settings, metrics=Metrics())
        gateway.test_checkpoint = read_test_marker(settings.model)
        app.state.gateway = gateway
        started = time.monotonic()
        from server.vad import SileroVad

        gateway.vad = await asyncio.to_thread(SileroVad)
        gateway.services = await builder(settings)
        gateway.metrics.track_token2wav_queue(gateway.services.token2wav.queue_depth)
        log.info("ready", extra={"load_s": round(time.monotonic() - started, 2)})
        try:
            yield
        finally:
            log.info("shutting down", extra={"sessions": len(gateway.sessions)})
            await close_all_sessions(gateway, timeout=settings.shutdown_timeout_s)
            services, gateway.services = gateway.services, None
            await services.engine.close()
            await services.token2wav.close()

    app = FastAPI(title="Step-Audio 2 realtime gateway", lifespan=lifespan)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(gateway: GatewayDep) -> JSONResponse:
        if gateway.services is None:
            return JSONResponse({"status": "loading"}, status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics")
    async def metrics(gateway: GatewayDep) -> Response:
        if gateway.services is not None:
            # A remote engine's servers (the embedded engine has none).
            gateway.metrics.observe_engine_servers(getattr(gateway.services.engine, "servers", ()))
        return Response(gateway.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/info")
    async def info(gateway: GatewayDep) -> dict[str, Any]:
        services = gateway.services
        return {
            "model": settings.model_name,
            "default_voice": services.token2wav.default_voice if services else None,
            "voices": services.token2wav.voice_names() if services else [],
            "test_checkpoint": gateway.test_checkpoint is not None,
            "test_checkpoint_info": gateway.test_checkpoint,
            "ready": services is not None,
            "sessions": len(gateway.sessions),
            "max_sessions": settings.max_sessions,
            "server_tools": list(settings.server_tools),
            "token2wav_precision": settings.token2wav_precision,
        }

    app.include_router(realtime_router)
    app.include_router(voices_router)
    static = web_dir(settings)
    if static is not None:
        # Mounted last so that the API routes above win.
        app.mount("/", StaticFiles(directory=static, html=True), name="web")
    return app


def gateway_server(config: Any) -> Any:
    """A uvicorn server whose shutdown first closes the realtime sessions gracefully (code 1001,
    responses cancelled), before uvicorn drops the remaining connections with 1012."""
    import uvicorn

    class GatewayServer(uvicorn.Server):
        async def shutdown(self, sockets: Any = None) -> None:
            from server.realtime import close_all_sessions

            app = self.config.loaded_app if self.config.loaded else None
            gateway = getattr(getattr(_inner_app(app), "state", None), "gateway", None)
            if gateway is not None:
                await close_all_sessions(gateway, timeout=gateway.settings.shutdown_timeout_s)
            await super().shutdown(sockets)

    return GatewayServer(config)


def _inner_app(app: Any) -> Any:
    """uvicorn wraps the ASGI app in middleware; find the FastAPI app inside."""
    while app is not None and not isinstance(app, FastAPI):
        app = getattr(app, "app", None)
    return app
