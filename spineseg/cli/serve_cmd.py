"""``spineseg serve``: the web service on uvicorn, migrations applied and the job workers
started (settings from SPINESEG_* variables; see ``spineseg.config``)."""

from __future__ import annotations

import argparse
import dataclasses


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("serve", help="start the web service (API, pages, job workers)")
    parser.add_argument("--host", help="address to listen on (default SPINESEG_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default SPINESEG_PORT or 8000)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from spineseg.config import Settings
    from spineseg.web.app import create_app

    settings = Settings.from_env()
    changes = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = dataclasses.replace(settings, **changes)
    app = create_app(settings)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info",
                proxy_headers=settings.secure_cookies, timeout_graceful_shutdown=30)
    return 0
