"""Out of Office Pro: after-hours request router for small firms."""

__version__ = "0.1.0"
