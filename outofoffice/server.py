"""Serve the app with waitress, next to the scheduler; shut both down cleanly."""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading

from outofoffice import connections, traffic, web_processes
from outofoffice.config import is_loopback
from outofoffice.heartbeat import Heartbeat
from outofoffice.instance import Instance
from outofoffice.policy import REQUEST_BODY_MAX
from outofoffice.scheduler import Scheduler
from outofoffice.web import create_app

log = logging.getLogger(__name__)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def make_server(instance: Instance, host: str, port: int, sock: socket.socket | None = None):
    """waitress on host:port (or on ``sock``, made already) with [server]'s limits:
    connections in all and per client address, how long one may idle or take to send
    its request (outofoffice.connections)."""
    config = instance.config
    settings = config.server
    options = {
        **({"sockets": [sock]} if sock else {"host": host, "port": port}),
        "threads": settings.threads,
        "ident": "outofoffice",
        # the app answers 64 KiB to 1 MiB with its own 413 page; beyond, waitress stops it
        "max_request_body_size": 16 * REQUEST_BODY_MAX,
        "clear_untrusted_proxy_headers": True,
        "connection_limit": connections.fit_open_files(
            settings.connection_limit, settings.asyncore_use_poll
        ),
        "channel_timeout": settings.channel_timeout,
        "cleanup_interval": settings.cleanup_interval,
        "asyncore_use_poll": settings.asyncore_use_poll,
    }
    if settings.trusted_proxy:
        options |= {
            "trusted_proxy": settings.trusted_proxy,
            "trusted_proxy_headers": {"x-forwarded-for", "x-forwarded-proto"},
        }
    return connections.create_server(
        create_app(config, instance),
        per_address=settings.connections_per_address,
        exempt=[settings.trusted_proxy],
        **options,
    )


def serve(
    instance: Instance,
    host: str,
    port: int,
    with_scheduler: bool = True,
    listen_fd: int | None = None,
    parent_fd: int | None = None,
) -> None:
    """Run until SIGINT or SIGTERM, with [server] processes - 1 more web processes on
    the same socket; ``listen_fd``: be one of those, on the socket another serve made."""
    others = None
    if listen_fd is not None:
        sock = socket.socket(fileno=listen_fd)
        if parent_fd is not None:
            web_processes.stop_with_parent(parent_fd)
    elif web_processes.wanted(instance.config) > 1:
        sock = web_processes.listening_socket(host, port)
        count = web_processes.wanted(instance.config) - 1
        others = web_processes.WebProcesses(instance.config, host, port, sock, count)
    else:
        sock = None
    server = make_server(instance, host, port, sock)
    scheduler = Scheduler(instance) if with_scheduler else None
    if scheduler:
        try:
            scheduler.start()
        except Exception:
            server.close()
            raise
    if others:
        others.start()
    if listen_fd is None and not instance.config.https and not is_loopback(host):
        log.warning(
            "listening on %s with an http:// base_url: sign-in links and cookies travel "
            "unencrypted unless a TLS proxy sits in front; set [server] base_url to https://",
            host,
        )
    if listen_fd is None and instance.config.mail.backend == "console":
        log.warning(
            'mail goes to this log ([mail] backend = "console"), sign-in links included; '
            "choose smtp or resend for real use"
        )
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_interrupt)
    if listen_fd is None:
        log.info(
            "serving on http://%s:%s (public address %s)", host, port, instance.config.base_url
        )
    counts = traffic.Flusher(instance.traffic)
    counts.start()
    # where this process serves: commands beside it print links there (base_url left out)
    beat = Heartbeat("web+scheduler" if scheduler else "web", url=instance.config.base_url)
    beat.start()
    try:
        with contextlib.suppress(KeyboardInterrupt):  # SIGINT or SIGTERM: a clean stop
            server.run()
    finally:
        log.info("shutting down")
        if others:
            others.stop()
        server.close()
        counts.stop()
        if scheduler:
            scheduler.stop()
        beat.stop()
