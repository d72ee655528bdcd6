"""Pages anyone may see: the landing page, the privacy policy, static files."""

from pathlib import Path

import bottle

from outofoffice.web.context import instance, page

STATIC = Path(__file__).resolve().parent.parent / "static"


def install(app: bottle.Bottle) -> None:
    @app.get("/")
    def landing():
        return page("index.html")

    @app.get("/privacy")
    def privacy():
        return page("privacy.html", retention=instance().config.retention)

    @app.get("/static/<path:path>")
    def static(path):
        response = bottle.static_file(path, root=str(STATIC))
        if response.status_code == 200:
            response.set_header("Cache-Control", "public, max-age=86400")
        return response
