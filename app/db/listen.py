"""Long-lived connections that must come back: `reconnecting` runs a session again and again with a
backoff, and `Listener` is the one reconnecting PostgreSQL LISTEN connection every process uses
(cache invalidations, the relay's wake-up). The scheduler's leader session and the delivery
processes' Redis purge subscription use `reconnecting` too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import asyncpg
import redis.exceptions

log = logging.getLogger("cms.reconnect")

# Expected when a server goes away or restarts: logged in one line. Anything else (a bug) is logged
# with its traceback.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError, ConnectionError, TimeoutError, asyncpg.InterfaceError, asyncpg.PostgresError,
    redis.exceptions.RedisError,
)


async def reconnecting(
    session: Callable[[], Awaitable[None]], *, name: str, first_delay: float = 0.2, max_delay: float = 5.0,
    stop: asyncio.Event | None = None, on_lost: Callable[[], None] | None = None,
    connected: Callable[[], bool] | None = None,
) -> None:
    """Run `session()` until `stop` is set (for ever without one), again after it returns or fails.

    The delay between two sessions starts at `first_delay` and doubles up to `max_delay`; it starts
    over after a session that got connected (`connected()` true when it ended; without it, a
    session that ran longer than `max_delay`). `on_lost` runs after every session that ended.
    """
    delay = first_delay
    loop = asyncio.get_running_loop()
    while stop is None or not stop.is_set():
        started = loop.time()
        error: Exception | None = None
        try:
            await session()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = exc
        got_going = connected() if connected is not None else loop.time() - started > max_delay
        if on_lost is not None:
            on_lost()
        if got_going:
            delay = first_delay
        if error is not None:
            log.warning("%s: %s: %s; again in %.1f s", name, type(error).__name__, error, delay,
                        exc_info=not isinstance(error, CONNECTION_ERRORS))
        if stop is None:
            await asyncio.sleep(delay)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
        delay = min(delay * 2, max_delay)


class ReconnectingSession:
    """A background task running `_session()` with `reconnecting`; `ready` is set while a session
    is up (the subclass sets it), cleared when it ends, then `on_lost` runs."""

    name = "session"

    def __init__(self, *, on_lost: Callable[[], None] | None = None) -> None:
        self.on_lost = on_lost
        self.ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self, wait: float = 0.0) -> None:
        """Start; wait up to `wait` seconds for the first session to be ready (never fails)."""
        self._task = asyncio.create_task(
            reconnecting(self._session, name=self.name, on_lost=self._lost, connected=self.ready.is_set),
            name=f"cms-{self.name}",
        )
        if wait:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.ready.wait(), wait)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        self.ready.clear()

    def _lost(self) -> None:
        self.ready.clear()
        if self.on_lost is not None:
            self.on_lost()

    async def _session(self) -> None:
        raise NotImplementedError


class Listener(ReconnectingSession):
    """A dedicated connection LISTENing on `channels` ({channel: callback(payload)}).

    `on_connect` runs once listening (again after every reconnect: whatever was sent while nobody
    listened is lost, so the caller catches up there), `on_lost` when the connection is gone. The
    connection is probed every `keepalive` seconds, so a dead one is noticed without traffic.
    """

    def __init__(
        self, dsn: str, channels: dict[str, Callable[[str], None]], *, name: str, keepalive: float = 1.0,
        on_connect: Callable[[], None] | None = None, on_lost: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(on_lost=on_lost)
        self.dsn = dsn
        self.channels = channels
        self.name = name
        self.keepalive = keepalive
        self.on_connect = on_connect

    async def _session(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            for channel, callback in self.channels.items():
                await conn.add_listener(channel, _payload_only(callback))
            self.ready.set()
            if self.on_connect is not None:
                self.on_connect()
            while not conn.is_closed():
                await asyncio.sleep(self.keepalive)
                await conn.execute("SELECT 1")
        finally:
            if not conn.is_closed():
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), 2)


def _payload_only(callback: Callable[[str], None]) -> Callable[..., None]:
    def on_notify(_conn: object, _pid: int, _channel: str, payload: object) -> None:
        try:
            callback(str(payload))
        except Exception:
            log.exception("a LISTEN callback failed")

    return on_notify
