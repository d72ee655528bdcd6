"""Push servers: ntfy (ntfy.py), the one a vendor's phone app subscribes to."""
