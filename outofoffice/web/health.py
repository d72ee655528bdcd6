"""/healthz for monitors: database, scheduler and outbox backlog, as JSON."""

import json

import bottle

from outofoffice import scheduler
from outofoffice.mail import outbox
from outofoffice.web.context import instance


def install(app: bottle.Bottle) -> None:
    @app.get("/healthz")
    def healthz():
        report = {"status": "ok", "database": "ok", "scheduler": "", "outbox_backlog": None}
        try:
            report["outbox_backlog"] = outbox.backlog()
        except Exception as exc:  # any database failure is the report, not a 500
            report["database"] = f"error: {type(exc).__name__}"
        report["scheduler"] = scheduler.state(instance().config)
        healthy = report["database"] == "ok" and report["scheduler"].startswith("running")
        report["status"] = "ok" if healthy else "error"
        bottle.response.status = 200 if healthy else 503
        bottle.response.content_type = "application/json"
        bottle.response.set_header("Cache-Control", "no-store")
        return json.dumps(report)
