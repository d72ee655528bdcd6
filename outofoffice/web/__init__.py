"""The web app: ``create_app(config)`` builds a bottle.Bottle; nothing happens at import."""

from outofoffice.web.application import create_app

__all__ = ["create_app"]
