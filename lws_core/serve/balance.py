"""`lws serve --processes N`: each new connection goes to the server process with the most room.

Why: every process binds its own ``SO_REUSEPORT`` socket, and the kernel spreads new connections by a hash of
their addresses, not by load. Each process admits up to its own measured capacity, so a burst that the hash
puts unevenly was refused in one process while the other had room (benchmarks/results/serve.md, stop 43: 2 of
100 and 2 of 128). Here a process that accepts a connection while another has more room passes the connected
socket itself to that one (``SCM_RIGHTS`` over a Unix datagram socket of the supervisor's), before a byte of it
is read; the client sees one ordinary connection.

Room is the sessions a process would still admit (its admission limit: measured capacity, the share of
``max_sessions`` and ``max_connections``, at most the mean of every process's own limit: :meth:`Balancer.mean_limit`)
less the connections it holds. Each process publishes its own room in
a shared array about every ``PUBLISH_S`` and after each decision; a sender counts what it passed on against
the receiver's published room until the receiver publishes again. A passed connection is never passed again.

Hand-written because nothing in the stack does it: uvicorn's own workers share one socket and leave the choice
to the kernel's wake-ups, and no ASGI server we ship balances by the application's admission. The hook is
uvicorn's HTTP protocol class (``Config.http_protocol_class``, what ``Config(http=...)`` sets), swapped at
start-up for a subclass that decides in ``connection_made``, the first call a new connection gets, and is
otherwise uvicorn's own protocol.
"""

from __future__ import annotations

import asyncio
import math
import socket
from collections.abc import Callable
from typing import Any

PUBLISH_S = 0.025  # how stale another process's published room may be


class Balancer:
    """One process's side: its inbox, every process's outbox, the shared room array."""

    def __init__(
        self, index: int, rooms: Any, inbox: socket.socket, outboxes: list[socket.socket], limits: Any = None,  # noqa: ANN401 - RawArrays
    ) -> None:
        """``rooms``, ``limits``: shared ``RawArray("d", N)`` (``limits`` NaN until a process publishes). Their updates
        are not locked: a lost update only makes one decision on a stale figure, corrected at the next publish."""
        self.index = index
        self.rooms = rooms
        self.limits = limits
        self.inbox = inbox
        self.outboxes = outboxes
        for s in [inbox, *outboxes]:
            s.setblocking(False)
        # set in the server process (a spawned process gets the Balancer pickled, so no callables before then)
        self.limit: Callable[[], float] | None = None  # the sessions it would hold now
        self.own_limit: Callable[[], float] | None = None  # ... by its own measurements alone (what it publishes)
        self.on_handoff: Callable[[], None] | None = None  # counts a passed connection in the metrics
        self._held: set[asyncio.BaseTransport] = set()

    def room(self) -> float:
        """Sessions this process would still admit, less the connections it holds (closed ones pruned)."""
        self._held = {t for t in self._held if not t.is_closing()}
        return (self.limit() if self.limit is not None else float("inf")) - len(self._held)

    def publish(self) -> None:
        if self.limits is not None and self.own_limit is not None:
            self.limits[self.index] = min(1e9, self.own_limit())
        room = self.room()
        self.rooms[self.index] = max(-1e9, min(1e9, room))

    def mean_limit(self) -> float:
        """The mean of the processes' own published limits (inf before any has published).

        Why each process admits at most this: the processes are alike (one model, a core each), so their cost
        models estimate one capacity with noise, and trust grows with what a process has served. Each admitting up
        to its own estimate let the optimistic one take twice the other's sessions, past its core's capacity (48 /
        97 sessions at p95 1.1 s where 96 / 96 held 0.88 s; benchmarks/results/serve.md, stop 48)."""
        if self.limits is None:
            return math.inf
        published = [v for v in self.limits[:] if math.isfinite(v)]
        return sum(published) / len(published) if published else math.inf

    def hold(self, transport: asyncio.BaseTransport) -> None:
        self._held.add(transport)
        self.publish()

    def target(self) -> int | None:
        """The process to pass a new connection to, or None to keep it: another process only when its room is
        larger than this one's (ties keep it here, so an even spread moves nothing)."""
        mine = self.room()
        others = [(self.rooms[j], j) for j in range(len(self.outboxes)) if j != self.index]
        if not others:
            return None
        best_room, best = max(others)
        return best if best_room > mine else None

    def pass_on(self, transport: asyncio.BaseTransport, to: int) -> bool:
        """Send the connection's socket to process ``to``; False (keep it) when its inbox is full."""
        sock = transport.get_extra_info("socket")
        try:
            socket.send_fds(self.outboxes[to], [b"c"], [sock.fileno()])
        except (BlockingIOError, OSError):
            return False
        self.rooms[to] -= 1  # until ``to`` publishes again
        if self.on_handoff is not None:
            self.on_handoff()
        return True

    def take(self) -> list[socket.socket]:
        """Sockets other processes have passed here (non-blocking; empty when none)."""
        out = []
        while True:
            try:
                _, fds, _, _ = socket.recv_fds(self.inbox, 16, 32)
            except (BlockingIOError, InterruptedError):
                return out
            for fd in fds:
                s = socket.socket(fileno=fd)
                s.setblocking(False)
                out.append(s)


def balanced_protocol(base: type, balancer: Balancer) -> type:
    """uvicorn's HTTP protocol class ``base``, deciding at ``connection_made`` whether to keep the connection."""

    class Balanced(base):  # type: ignore[misc, valid-type]
        keep = False  # set on connections passed here: never passed again

        def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
            to = None if self.keep else balancer.target()
            if to is not None and balancer.pass_on(transport, to):
                self._passed = True
                transport.abort()  # closes this process's descriptor only: the connection lives on in ``to``
                return
            balancer.hold(transport)
            super().connection_made(transport)

        def connection_lost(self, exc: Exception | None) -> None:
            # a passed connection never reaches uvicorn's protocol (asyncio starts reading only after
            # ``connection_made``, and not on a transport already closing), so only its end is skipped here
            if not getattr(self, "_passed", False):
                super().connection_lost(exc)

    return Balanced


def balanced_server(config: Any, balancer: Balancer) -> Any:  # noqa: ANN401 - uvicorn Config / Server
    """A ``uvicorn.Server`` whose connections go through ``balancer``: the protocol above for those the kernel
    gives this process, and an inbox reader for those other processes pass here."""
    import uvicorn

    class BalancedServer(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            self.config.http_protocol_class = balanced_protocol(self.config.http_protocol_class, balancer)
            await super().startup(sockets)
            loop = asyncio.get_running_loop()

            def make() -> asyncio.Protocol:
                p = self.config.http_protocol_class(
                    config=self.config, server_state=self.server_state, app_state=self.lifespan.state, _loop=loop
                )
                p.keep = True
                return p

            def on_inbox() -> None:
                for s in balancer.take():
                    loop.create_task(loop.connect_accepted_socket(make, s))

            def tick() -> None:
                balancer.publish()
                self._tick = loop.call_later(PUBLISH_S, tick)

            loop.add_reader(balancer.inbox.fileno(), on_inbox)
            tick()

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            loop = asyncio.get_running_loop()
            loop.remove_reader(balancer.inbox.fileno())
            if getattr(self, "_tick", None) is not None:
                self._tick.cancel()
            balancer.rooms[balancer.index] = -1e9  # take no more connections from the others
            if balancer.limits is not None:
                balancer.limits[balancer.index] = math.nan  # and leave the others' mean
            await super().shutdown(sockets)

    return BalancedServer(config)
