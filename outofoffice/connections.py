"""The web server's connections: a cap per client address, a deadline for each request
to arrive, and enough file descriptors for connection_limit.

waitress limits connections only in all (connection_limit) and closes only idle ones
(channel_timeout), and it has no time limit on a request's headers: one client that
opens connections and sends a byte now and then (slowloris) holds them all, and no other
caller's routing page answers. So its server here counts open connections per client
address as it accepts them and closes the newest beyond [server]
connections_per_address at once, and closes a connection whose request has not arrived
whole within channel_timeout of its first byte. The trusted_proxy's address is exempt:
every client comes through it, and the proxy limits each one.
"""

from __future__ import annotations

import ipaddress
import logging
import resource
import select
import time
from collections import Counter
from collections.abc import Callable, Iterable

from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import MultiSocketServer, TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher

log = logging.getLogger(__name__)

# Descriptors the process holds beside client connections: the database's files or
# connections, the listening socket and waitress's trigger, mail connections, logs.
FILES_BESIDE_CONNECTIONS = 128
# select() cannot watch a descriptor numbered 1024 or more.
SELECT_LIMIT = 1024
REFUSALS_LOGGED_EVERY = 60.0  # seconds
NAMED_PER_MINUTE = 10  # addresses named in the log a minute; more are only counted
NETWORK_SHARE = 4  # an IPv6 /48 (one site) may hold this many times the cap of a /64


def client_key(address: str) -> str:
    """What the per-address cap counts: the IPv4 address, or an IPv6 address's /64 (one
    site's network: a client holding one can pick any address in it)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if ip.version == 6:
        if ip.ipv4_mapped:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _exact(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    return str(ip.ipv4_mapped or ip) if ip.version == 6 else str(ip)


class AddressCounts:
    """Open connections per client address, for one server: counted when a connection
    is accepted, released when it closes, whatever the reason. An IPv6 client counts
    against its /64 and, more loosely, its /48 (a site handed a /48 has 65,536 /64s).
    The trusted proxy's exact address is not counted. Only waitress's loop thread
    accepts and closes connections, so no lock is needed."""

    def __init__(self, cap: int, exempt: Iterable[str] = ()):
        self.cap = cap
        self.exempt = frozenset(_exact(a) for a in exempt if a)
        self.open: Counter[str] = Counter()

    def keys(self, address: str) -> tuple[str, ...]:
        """What a connection from ``address`` counts against; none for the proxy."""
        if _exact(address) in self.exempt:
            return ()
        key = client_key(address)
        if not key.endswith("/64"):
            return (key,)
        site = ipaddress.ip_network(key).supernet(new_prefix=48)
        return key, str(site)

    def admits(self, keys: tuple[str, ...]) -> bool:
        return all(
            self.open[k] < (self.cap * NETWORK_SHARE if k.endswith("/48") else self.cap)
            for k in keys
        )

    def opened(self, keys: tuple[str, ...]) -> None:
        for key in keys:
            self.open[key] += 1

    def closed(self, keys: tuple[str, ...]) -> None:
        for key in keys:
            self.open[key] -= 1
            if self.open[key] <= 0:
                del self.open[key]


class RefusalLog:
    """One warning per address per minute while the cap refuses its connections, with
    how many; the address is all it names. At most NAMED_PER_MINUTE new addresses are
    named a minute: a flood from many addresses is one line a minute with its counts,
    not a line per address."""

    def __init__(
        self,
        cap: int,
        every: float = REFUSALS_LOGGED_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.cap, self.every, self.clock = cap, every, clock
        self.windows: dict[str, list] = {}  # key -> [when its line was logged, refused since]
        self.named: list[float] = []  # when each address was first named, this minute
        self.unnamed = 0  # refusals from addresses not named, this minute
        self.unnamed_since = clock()

    def refused(self, key: str) -> None:
        window = self.windows.get(key)
        if window is None:
            now = self.clock()
            self.named = [t for t in self.named if now - t < self.every]
            if len(self.named) >= NAMED_PER_MINUTE:
                self.unnamed += 1
                return
            self.named.append(now)
            log.warning(
                "refusing connections from %s: it holds %d open, the most [server] "
                "connections_per_address allows (logged once a minute while it lasts)",
                key,
                self.cap,
            )
            self.windows[key] = [self.clock(), 0]
            return
        window[1] += 1
        self._log_if_due(key, self.clock())

    def tick(self) -> None:
        """Log the refusals of each address whose minute has passed; forget the quiet."""
        now = self.clock()
        for key in list(self.windows):
            self._log_if_due(key, now)
        if now - self.unnamed_since >= self.every:
            if self.unnamed:
                log.warning(
                    "refused %d more connections from addresses not named here, in the "
                    "last %d s ([server] connections_per_address = %d)",
                    self.unnamed,
                    round(now - self.unnamed_since),
                    self.cap,
                )
            self.unnamed, self.unnamed_since = 0, now

    def _log_if_due(self, key: str, now: float) -> None:
        logged, count = self.windows[key]
        if now - logged < self.every:
            return
        if not count:
            del self.windows[key]
            return
        log.warning(
            "refused %d more connections from %s in the last %d s ([server] "
            "connections_per_address = %d)",
            count,
            key,
            round(now - logged),
            self.cap,
        )
        self.windows[key] = [now, 0]


class LimitedChannel(HTTPChannel):
    """waitress's channel, counted against its client's address while it is open, and
    knowing since when its unfinished request has been arriving."""

    counted = False
    arriving_since: float | None = None  # time.monotonic() of a partial request's first byte

    def __init__(self, server, sock, addr, adj, map=None):
        self.address_keys = server.addresses.keys(addr[0])
        super().__init__(server, sock, addr, adj, map=map)

    def add_channel(self, map=None):
        super().add_channel(map)
        self.server.addresses.opened(self.address_keys)
        self.counted = True

    def del_channel(self, map=None):
        super().del_channel(map)
        if self.counted:  # once, however many ways it is closed
            self.counted = False
            self.server.addresses.closed(self.address_keys)

    def received(self, data):
        if self.request is None and data:
            self.arriving_since = time.monotonic()
        done = super().received(data)
        if self.request is None:
            self.arriving_since = None
        return done


def epoll_once(timeout: float, socket_map: dict) -> None:
    """One turn of waitress's loop, watching with epoll: what wasyncore.poll2 does with
    poll(), which on this kind of machine served a sixth of the requests select() did
    (bench/README.md), without select()'s limit of 1,024 descriptors."""
    watcher = select.epoll(max(len(socket_map), 1))
    try:
        for fd, obj in list(socket_map.items()):
            flags = 0
            if obj.readable():
                flags |= select.EPOLLIN | select.EPOLLPRI
            if obj.writable() and not obj.accepting:  # a listening socket is never written
                flags |= select.EPOLLOUT
            if flags:
                try:
                    watcher.register(fd, flags)
                except OSError:  # a connection already gone: closed, not the loop's end
                    wasyncore.readwrite(obj, select.POLLNVAL)
        try:
            events = watcher.poll(timeout)
        except InterruptedError:
            events = []
    finally:
        watcher.close()
    for fd, flags in events:
        obj = socket_map.get(fd)
        if obj is not None:
            wasyncore.readwrite(obj, flags)


def run_loop(adj: Adjustments, socket_map: dict) -> None:
    """waitress's loop until its map is empty; epoll for asyncore_use_poll where the
    system has it, select() otherwise."""
    if adj.asyncore_use_poll and hasattr(select, "epoll"):
        once = epoll_once
    else:
        once = wasyncore.poll2 if adj.asyncore_use_poll else wasyncore.poll
    while socket_map:
        once(adj.asyncore_loop_timeout, socket_map)


class QueueDepthLog:
    """waitress warns once per request that waits for a free thread: under a burst that
    is a line per request, written by the very thread that accepts them. This says it
    once a minute, with the deepest the queue got."""

    def __init__(self, every: float = REFUSALS_LOGGED_EVERY, clock=time.monotonic):
        self.every, self.clock = every, clock
        self.deepest = 0
        self.logged_at: float | None = None

    def warning(self, message: str, depth: int, *args) -> None:
        self.deepest = max(self.deepest, depth)
        now = self.clock()
        if self.logged_at is None or now - self.logged_at >= self.every:
            log.warning(
                "requests waited for a free thread (up to %d at once%s); if this lasts, "
                "see [server] threads and processes in docs/performance.md",
                self.deepest,
                "" if self.logged_at is None else f" in the last {round(now - self.logged_at)} s",
            )
            self.logged_at, self.deepest = now, 0


class LimitedServer(TcpWSGIServer):
    """waitress's TCP server with the per-address cap and the arrival deadline."""

    def __init__(self, *args, addresses: AddressCounts, refusals: RefusalLog, **kwargs):
        self.addresses, self.refusals = addresses, refusals
        super().__init__(*args, **kwargs)

    @staticmethod
    def channel_class(server, sock, addr, adj, map=None):
        """waitress's accept hands each new socket here: a channel, or, beyond the
        address's cap, closed at once."""
        keys = server.addresses.keys(addr[0])
        if not server.addresses.admits(keys):
            sock.close()
            server.refusals.refused(keys[0])
            return None
        return LimitedChannel(server, sock, addr, adj, map=map)

    def run(self):
        try:
            run_loop(self.adj, self._map)
        except (SystemExit, KeyboardInterrupt):
            self.task_dispatcher.shutdown()

    def maintenance(self, now):
        super().maintenance(now)  # the idle ones
        cutoff = time.monotonic() - self.adj.channel_timeout
        for channel in self.active_channels.values():
            since = channel.arriving_since
            if since is not None and since < cutoff and not channel.requests:
                channel.will_close = True
        self.refusals.tick()


def create_server(application, per_address: int, exempt: Iterable[str] = (), **options):
    """waitress.create_server's TCP part with LimitedServer; options are waitress's
    (``sockets``: listening sockets made already, as another process made them)."""
    adj = Adjustments(**options)
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.queue_logger = QueueDepthLog()
    dispatcher.set_thread_count(adj.threads)
    socket_map: dict = {}
    limits = {
        "dispatcher": dispatcher,
        "adj": adj,
        "addresses": AddressCounts(per_address, exempt),
        "refusals": RefusalLog(per_address),
    }
    servers = [
        LimitedServer(application, socket_map, sockinfo=sockinfo, **limits)
        for sockinfo in ([] if adj.sockets else adj.listen)
    ] + [
        LimitedServer(
            application,
            socket_map,
            True,
            sock,
            sockinfo=(sock.family, sock.type, sock.proto, sock.getsockname()),
            bind_socket=False,
            **limits,
        )
        for sock in adj.sockets
    ]
    if len(servers) == 1:
        return servers[0]
    listening = [(s.effective_host, s.effective_port) for s in servers]
    return LimitedMultiSocketServer(socket_map, adj, listening, dispatcher, servers[-1].log_info)


class LimitedMultiSocketServer(MultiSocketServer):
    """Several listening sockets in one loop, run as LimitedServer runs."""

    def run(self):
        try:
            run_loop(self.adj, self.map)
        except (SystemExit, KeyboardInterrupt):
            self.close()


def fit_open_files(connection_limit: int, use_poll: bool) -> int:
    """Raise the soft limit on open files so connection_limit connections fit, as far as
    the hard limit allows; the connection limit that fits, said in the log if it is less.

    Each connection is a file descriptor; a systemd service starts with a soft limit of
    1,024, fewer than the default connection_limit needs. A server out of descriptors
    fails every accept in a busy loop, so the limit given to waitress must fit."""
    needed = connection_limit + FILES_BESIDE_CONNECTIONS
    if not use_poll:
        needed = min(needed, SELECT_LIMIT)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError) as exc:
            log.warning("could not raise the open files limit from %d: %s", soft, exc)
        else:
            log.info(
                "raised the open files limit from %d to %d for [server] connection_limit %d",
                soft,
                target,
                connection_limit,
            )
            soft = target
    fits = connection_limit
    if soft != resource.RLIM_INFINITY and soft < needed:
        fits = max(soft - FILES_BESIDE_CONNECTIONS, soft // 2)
        log.warning(
            "only %d files may be open (hard limit %s): serving at most %d connections, not "
            "[server] connection_limit %d; raise LimitNOFILE= in the systemd unit or lower "
            "connection_limit",
            soft,
            "unlimited" if hard == resource.RLIM_INFINITY else hard,
            fits,
            connection_limit,
        )
    if not use_poll and fits > SELECT_LIMIT - FILES_BESIDE_CONNECTIONS:
        fits = SELECT_LIMIT - FILES_BESIDE_CONNECTIONS
        log.warning(
            "[server] asyncore_use_poll = false: select() watches at most %d descriptors, so "
            "at most %d connections, not connection_limit %d",
            SELECT_LIMIT,
            fits,
            connection_limit,
        )
    return fits
