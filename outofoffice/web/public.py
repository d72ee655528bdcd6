"""Pages anyone may see: the landing page, the privacy policy, static files."""

from pathlib import Path

import bottle

from outofoffice.web import caller
from outofoffice.web.context import fail, instance, page

STATIC = Path(__file__).resolve().parent.parent / "static"


def install(app: bottle.Bottle) -> None:
    @app.route("/", ["GET", "POST"])
    def landing():
        slug = caller.slug_from_host()
        if slug is not None:
            return caller.routing_page(slug)
        if bottle.request.method == "POST":
            raise fail(405, "This page does not accept that kind of request.")
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
