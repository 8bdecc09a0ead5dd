"""The app factory: ``create_app(settings)`` builds the FastAPI app with its database
(migrated at start), model registry, job queue with worker threads, sessions and routes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.middleware.sessions import SessionMiddleware

from spineseg.config import Settings
from spineseg.jobs.queue import JobQueue
from spineseg.jobs.train_scheduler import TrainingScheduler
from spineseg.registry import open_registry
from spineseg.services.disk_room import DiskWatch
from spineseg.services.first_run import open_first_run
from spineseg.services.health import HealthMonitor, check_health
from spineseg.services.retention import RetentionSweeper
from spineseg.store import audit
from spineseg.store.database import open_database
from spineseg.store.datasets import remove_orphan_case_dirs
from spineseg.store.locks import guard_registry
from spineseg.store.models import PASSWORD_RULE
from spineseg.web import openapi_errors
from spineseg.web.body_limit import BodyLimit, route_limits
from spineseg.web.deps import AppServices, CurrentUser
from spineseg.web.errors import install_error_handlers
from spineseg.web.security_headers import SecurityHeaders
from spineseg.web.throttle import LoginThrottle

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
SESSION_COOKIE = "spineseg_session"
NIIVUE_VERSION = "0.69.0"
TRAINING_STOP_S = 6.0
SWAGGER_UI_VERSION = "5.35.0"  # static/vendor/swagger-ui-*-<version>, from the npm package swagger-ui-dist


def build_services(settings: Settings) -> AppServices:
    """Open (and migrate) the database, the registry and the queue for ``settings``."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    database = open_database(settings.sqlalchemy_url)
    audit.use_key(database, settings.session_secret(),  # the audit chain's HMAC key and head log
                  head_log=settings.data_dir / audit.HEAD_LOG_NAME)
    registry = open_registry(settings)
    guard_registry(registry, database)  # with PostgreSQL: a lock every machine honours
    return AppServices(settings, database, registry, JobQueue(settings, database, registry))


def _remove_orphan_uploads(services: AppServices) -> None:
    import shutil

    from spineseg.store.files import orphan_study_dirs
    from spineseg.store.studies import study_ids

    with services.database.session() as session:
        known = study_ids(session)
    for folder in orphan_study_dirs(services.settings.studies_dir, known):
        log.info("removing %s: an upload that never became a study", folder)
        shutil.rmtree(folder, ignore_errors=True)


def make_templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(PACKAGE_DIR / "templates"))
    templates.env.globals["niivue_file"] = f"vendor/niivue-{NIIVUE_VERSION}.min.js"
    templates.env.globals["password_rule"] = PASSWORD_RULE  # said on every form that sets a password
    return templates


def _add_docs(app: FastAPI) -> None:
    """OpenAPI document and Swagger UI, for logged-in users and token holders only."""
    @app.get("/openapi.json", include_in_schema=False)
    def openapi_document(_user: CurrentUser) -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    def swagger_ui(_user: CurrentUser) -> HTMLResponse:
        # Swagger UI is vendored like NiiVue: the page must work without reaching a CDN.
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="SpineSeg API",
            swagger_js_url=f"/static/vendor/swagger-ui-bundle-{SWAGGER_UI_VERSION}.js",
            swagger_css_url=f"/static/vendor/swagger-ui-{SWAGGER_UI_VERSION}.css",
            swagger_favicon_url="data:,",
        )


def all_routers() -> tuple[APIRouter, ...]:
    """Every router of the app, in the order they are included (it matters: ``pacs`` claims
    ``/pacs`` before ``pages`` would)."""
    from spineseg.web.routes import (
        admin,
        api,
        corrections,
        dataset_corrections,
        datasets,
        downloads,
        evaluation,
        first_run,
        models,
        pacs,
        pages,
        priors,
        promotions,
        reports,
        study_models,
        training,
        training_pages,
        uploads,
        viewer,
    )

    return (api.router, uploads.router,  # resumable uploads; its lifespan sweeps idle ones
            reports.router,  # a run's SR and one-page report
            downloads.router, evaluation.router, admin.router, first_run.router, datasets.router, training.router,
            models.router, promotions.router, study_models.router, training_pages.router, viewer.router,
            corrections.router, dataset_corrections.router, priors.router,
            pacs.router,  # DICOMweb: search, import, send back (before pages: /pacs)
            pages.router)


def create_app(settings: Settings | None = None, *, start_workers: bool = True) -> FastAPI:
    """The SpineSeg web app. ``start_workers=False`` leaves jobs queued (for tests of the queue
    itself); the session secret is checked here, so a bad production set-up fails at start."""
    settings = Settings.from_env() if settings is None else settings
    secret = settings.session_secret()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = build_services(settings)
        app.state.services = services
        if start_workers:
            services.queue.start()
        app.state.training = TrainingScheduler(settings, services.database, slots=1 if settings.workers > 0 else 0,
                                               worker_id=services.queue.worker_id)
        if start_workers:
            app.state.training.start()
        disk = services.disk_room()  # the free disk against SPINESEG_DISK_RESERVE_MB (issue 30.4)
        room = disk.room()
        if room.read_mostly:
            log.warning("starting read-mostly: the data directory's disk has %.0f MB free, below the reserve of "
                        "%.0f MB (SPINESEG_DISK_RESERVE_MB); pages, downloads and deletions work, new work is "
                        "refused (507) until space is freed", room.free / 2**20, room.reserve / 2**20)
        app.state.health = HealthMonitor(lambda: check_health(
            database=services.database, registry=services.registry, data_dir=settings.data_dir,
            pending=services.queue.pending, workers=settings.workers if start_workers else 0, disk=disk))
        services.health = app.state.health
        app.state.health.start()
        app.state.first_run = open_first_run(services.database)  # no account yet: a one-time link
        _remove_orphan_uploads(services)
        app.state.retention = RetentionSweeper(services.database, settings).start()  # daily, when on
        with services.database.session() as session:  # dataset case uploads cut off by a crash
            remove_orphan_case_dirs(session, datasets_dir=settings.data_dir / "datasets")
        log.debug("app started (data in %s)", settings.data_dir)  # `spineseg serve` prints the ready line
        try:
            yield
        finally:
            app.state.health.stop()
            app.state.retention.stop()
            # Trainers checkpoint on SIGTERM; one that needs longer is killed and resumes from
            # its last epoch: the whole stop stays inside serve's hard deadline.
            app.state.training.stop(timeout=TRAINING_STOP_S)
            services.queue.stop()
            services.database.dispose()

    app = FastAPI(
        title="SpineSeg",
        summary="Spine segmentation in CT: upload, segment, view, score and download.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # served below, behind the login like every other page
        redoc_url=None,
        openapi_url=None,
    )
    routers = all_routers()
    app.add_middleware(
        SessionMiddleware,
        secret_key=secret,
        session_cookie=SESSION_COOKIE,
        max_age=int(timedelta(hours=settings.session_hours).total_seconds()),
        same_site="lax",
        https_only=settings.secure_cookies,
    )
    # every body bounded before it is parsed; a route that takes more says so (max_body_size=)
    app.add_middleware(BodyLimit, limits=route_limits(route for router in routers for route in router.routes))
    app.add_middleware(DiskWatch)  # the free disk measured at most once a second (services.disk_room)
    app.add_middleware(SecurityHeaders)  # outermost: the 413 above gets the headers too

    app.state.templates = make_templates()
    app.state.login_throttle = LoginThrottle()
    install_error_handlers(app)
    for router in routers:
        app.include_router(router)
    openapi_errors.install(app)  # the real error shape and statuses in the OpenAPI document
    _add_docs(app)
    app.mount("/static", StaticFiles(directory=str(PACKAGE_DIR / "static")), name="static")
    return app
