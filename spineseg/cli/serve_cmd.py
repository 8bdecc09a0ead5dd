"""``spineseg serve``: the web service on uvicorn, migrations applied and the job workers
started (settings from SPINESEG_* variables; see ``spineseg.config``).

Stopping: SIGTERM or Ctrl-C gives open requests ``GRACE_S`` seconds, running jobs stop at
their next progress step and go back to the queue, training children get SIGTERM; whatever is
still running after ``HARD_DEADLINE_S`` is ended with the process (every job and training run
was saved as queued or running in the database and continues after the next start).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import socket
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI

log = logging.getLogger(__name__)

GRACE_S = 5
# Connections and requests in flight before new ones are answered 503 at once: far above a
# department's clients (the load benchmark uses 58), low enough that a flood cannot exhaust
# memory or the usual limit of 1024 file descriptors.
MAX_CONNECTIONS = 500
HARD_DEADLINE_S = 20.0


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("serve", help="start the web service (API, pages, job workers)")
    parser.add_argument("--host", help="address to listen on (default SPINESEG_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default SPINESEG_PORT or 8000)")
    parser.add_argument("--tls-cert", metavar="FILE", help="PEM certificate: serve HTTPS (default SPINESEG_TLS_CERT)")
    parser.add_argument("--tls-key", metavar="FILE", help="PEM private key of --tls-cert (default SPINESEG_TLS_KEY)")
    parser.set_defaults(func=run)


def _hard_exit() -> None:
    log.error("still running %.0f s after the stop signal: exiting now (jobs continue after the next start)",
              HARD_DEADLINE_S)
    logging.shutdown()
    os._exit(1)


def _ready_line(app: FastAPI, server: uvicorn.Server) -> str:
    from spineseg.services.startup import display_url, ready_message

    services = app.state.services
    port = services.settings.port
    if server.servers and server.servers[0].sockets:  # the bound port (also when 0 asked for any)
        port = server.servers[0].sockets[0].getsockname()[1]
    link = getattr(app.state, "first_run", None)  # set by the app's lifespan (services.first_run)
    url = display_url(services.settings.host, port)
    if services.settings.tls_files() is not None:
        url = "https://" + url.removeprefix("http://")
    return ready_message(services.settings, url=url,
                         model_id=services.registry.production_id(),
                         first_run_token=link.take_token() if link else None,
                         first_run_minutes=link.ttl_s / 60 if link else 0)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from spineseg.config import Settings
    from spineseg.services.startup import check_startup
    from spineseg.store.files import restrict_data_dir
    from spineseg.web.app import create_app

    class Server(uvicorn.Server):
        """uvicorn's server with a deadline: a stop signal always ends the process."""

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if not self.should_exit:
                timer = threading.Timer(HARD_DEADLINE_S, _hard_exit)
                timer.daemon = True
                timer.start()
            super().handle_exit(sig, frame)

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            """uvicorn's start-up, then the ready line: after uvicorn's own, so it is the last."""
            await super().startup(sockets=sockets)
            if self.started and not self.should_exit:
                log.info("%s", _ready_line(app, self))

    settings = Settings.from_env()
    changes = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    changes |= {k: Path(getattr(args, k)) for k in ("tls_cert", "tls_key") if getattr(args, k, None)}
    settings = dataclasses.replace(settings, **changes)
    tls = settings.tls_files()  # HTTPS served here: cookies Secure, HSTS sent (security_headers)
    behind_proxy = settings.secure_cookies
    if tls is not None:
        settings = dataclasses.replace(settings, secure_cookies=True)
    restrict_data_dir(settings.data_dir)  # patient data: files 0600, folders 0700 from here on
    check_startup(settings)  # a corrupt database or registry: one line naming the file, exit 2
    app = create_app(settings)
    ssl = {"ssl_certfile": str(tls[0]), "ssl_keyfile": str(tls[1])} if tls is not None else {}
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="info",
                            proxy_headers=behind_proxy, timeout_graceful_shutdown=GRACE_S,
                            limit_concurrency=MAX_CONNECTIONS, **ssl)
    Server(config).run()
    return 0
