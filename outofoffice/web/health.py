"""/healthz for monitors: 200 when all is well, else 503 with the problems, as JSON
(docs/monitoring.md lists the fields). outofoffice/health.py decides; this app's write
probe runs at most every few seconds however often it is asked."""

import json

import bottle

from outofoffice import health
from outofoffice.web.context import instance


def install(app: bottle.Bottle) -> None:
    probe = health.WriteProbe()  # this app's own: its rate limit is per process

    @app.get("/healthz")
    def healthz():
        report = health.assess(instance().config, probe)
        bottle.response.status = 200 if report.healthy else 503
        bottle.response.content_type = "application/json"
        bottle.response.set_header("Cache-Control", "no-store")
        return json.dumps(report.public())
