"""Rate limits (API.md, "Rate limits"): GCRA per credential, per client address without one.

- Management: one GCRA state per identity in Redis, updated by one Lua script (atomic, Redis's
  clock), so every process shares the limit. A busy identity does not pay a round trip per request:
  the script hands its process a small lease of cells (at most 1/20 of the limit, ≤ 64, granted
  only while they fit the window, so the limit holds exactly), spent locally within a second;
  cells of an expired lease are given back with the next call. An identity far from busy takes one
  cell per call, so small limits are exact to the request. If Redis cannot answer in time, requests
  pass (fail open: logged, counted in `cms_rate_limit_unavailable_total`) and Redis is left alone
  for a second, so an outage costs no latency. A refusal is remembered until a cell is due (at most
  half a second), so an identity hammering past its limit does not cost a round trip each time.
- Delivery: no I/O per request. Each process keeps its own GCRA states (bounded) with its share
  of the limit; the processes of the app count each other in Redis once a second (a heartbeat),
  so N processes each allow limit/N.

Every response but the probes (/healthz, /readyz, /metrics) carries `RateLimit-Policy` and
`RateLimit` (IETF draft syntax); past the limit the answer is 429 `rate-limited` with
`Retry-After` (management also records it in the audit log).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections import OrderedDict
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import Counter

from ..credentials.keys import presented_in
from ..problems import PROBLEM_JSON, ProblemError, problem_body
from ..tasks import stop_task

log = logging.getLogger("cms.rate_limits")
UNAVAILABLE = Counter("cms_rate_limit_unavailable_total", "Requests let through because Redis did not answer", ["app"])
EXEMPT = ("/healthz", "/readyz", "/metrics")

# GCRA (the generic cell rate algorithm): the state is the theoretical arrival time (TAT) of the
# next request; a request is allowed while TAT - now stays within the window.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local refund = tonumber(ARGV[4])  -- seconds of the timeline an expired lease did not use
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') - refund
if tat < now then tat = now end
local fits = math.floor((window - (tat - now)) / interval + 1e-9)
if fits < 1 then
  return {0, tostring(tat + interval - now)}
end
local granted = math.min(want, fits)
local diff = tat + granted * interval - now
redis.call('SET', KEYS[1], tostring(tat + granted * interval), 'PX', math.ceil(diff * 1000) + 1000)
return {granted, tostring(diff)}
"""


# A verdict: (allowed, limit, window, remaining, reset, retry_after), plain tuples (the hot path
# makes one per request). `reset`: seconds until the quota is whole again; `retry_after`: seconds.
Verdict = tuple[bool, int, int, int, int, int]


def verdict(allowed: bool, diff: float, limit: int, window: int) -> Verdict:
    """From GCRA's `diff` (the new TAT - now, or what it would have been when refused)."""
    interval = window / limit
    if allowed:
        return True, limit, window, max(0, int((window - diff) / interval)), math.ceil(diff), 0
    return False, limit, window, 0, math.ceil(diff - interval), max(1, math.ceil(diff - window))


def parse_rate(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    count, _, seconds = text.partition("/")
    try:
        return int(count), int(seconds)
    except ValueError:
        return None


class _Lease:
    """Cells this process took from Redis for one identity and has not spent yet."""

    __slots__ = ("cells", "diff", "expires", "refused_until", "taken", "want")

    def __init__(self) -> None:
        self.cells = 0  # unspent
        self.diff = 0.0  # Redis's TAT - now when the lease was granted
        self.taken = 0.0  # monotonic time of the grant
        self.expires = 0.0
        self.refused_until = 0.0
        self.want = 1  # the next lease's size: doubles while leases run out early, else shrinks


class RedisLimiter:
    """Management: the exact, shared limit (leases keep busy identities off Redis)."""

    LEASE_SECONDS = 1.0
    REFUSED_SECONDS = 0.5
    MAX_LEASE = 64
    MAX_IDENTITIES = 100_000

    def __init__(self, redis_url: str, app_name: str, namespace: str = "cms") -> None:
        self.app_name = app_name
        self.prefix = f"{namespace}:rl:{app_name}"
        # Short timeouts: a slow Redis must not make every request slow.
        self.redis = aioredis.from_url(redis_url, socket_timeout=0.25, socket_connect_timeout=0.25)
        self.script = self.redis.register_script(_GCRA)
        self._leases: OrderedDict[str, _Lease] = OrderedDict()
        self._down_until = 0.0
        self._logged_at = -1e9

    async def check(self, identity: str, limit: int, window: int) -> Verdict | None:
        """None: Redis did not answer; the request passes."""
        now = time.monotonic()
        interval = window / limit
        lease = self._leases.get(identity)
        if lease is not None:
            if lease.cells > 0 and now < lease.expires:
                lease.cells -= 1
                # What Redis would say now: the lease counts as spent there, its unspent cells are ours.
                diff = max(0.0, lease.diff - (now - lease.taken)) - lease.cells * interval
                return verdict(True, max(diff, interval), limit, window)
            if now < lease.refused_until:  # refused a moment ago: an identity over its limit costs no round trip
                return verdict(False, lease.diff - (now - lease.taken), limit, window)
        if now < self._down_until:
            UNAVAILABLE.labels(self.app_name).inc()
            return None
        if lease is None:
            lease = self._leases[identity] = _Lease()
            if len(self._leases) > self.MAX_IDENTITIES:
                self._leases.popitem(last=False)
        else:
            self._leases.move_to_end(identity)
            # A lease spent before it expired: the identity is busy, take more next time.
            cap = max(1, min(self.MAX_LEASE, limit // 20))
            lease.want = min(cap, lease.want * 2) if lease.cells == 0 and now < lease.expires else max(1, lease.want // 2)
        # Unspent cells of an expired lease go back, but only the part of them still ahead of now:
        # the rest of their time has passed anyway, and giving it back would admit it twice.
        refund = min(lease.cells * interval, max(0.0, lease.diff - (now - lease.taken))) if lease.cells else 0.0
        lease.cells = 0
        try:
            granted, diff = await self.script(
                keys=[f"{self.prefix}:{identity}"], args=[interval, window, lease.want, refund],
            )
        except (TimeoutError, aioredis.RedisError, OSError) as exc:
            self._down_until = now + 1.0
            UNAVAILABLE.labels(self.app_name).inc()
            if now - self._logged_at > 10:
                self._logged_at = now
                log.warning("rate limits not enforced: Redis did not answer (%s); requests pass", exc)
            return None
        granted, diff = int(granted), float(diff)
        if granted < 1:
            # Remembered until a cell is due, at most REFUSED_SECONDS (another process may give cells back).
            lease.diff, lease.taken = diff, now
            lease.refused_until = now + min(self.REFUSED_SECONDS, max(0.0, diff - window))
            return verdict(False, diff, limit, window)
        lease.cells += granted - 1  # one is this request's
        lease.diff, lease.taken, lease.expires = diff, now, now + self.LEASE_SECONDS
        return verdict(True, diff - lease.cells * interval, limit, window)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        await self.redis.aclose()


class LocalLimiter:
    """Delivery: per-process GCRA with this process's share of the limit (no I/O per request)."""

    MAX_IDENTITIES = 100_000
    HEARTBEAT = 1.0

    def __init__(self, redis_url: str, app_name: str, namespace: str = "cms") -> None:
        self.app_name = app_name
        self.prefix = f"{namespace}:rl:{app_name}"
        self.redis = aioredis.from_url(redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._tat: OrderedDict[str, float] = OrderedDict()
        self.processes = 1  # live processes of this app (the share divisor)
        self._me = f"{os.getpid()}:{id(self)}"
        self._task: asyncio.Task[None] | None = None

    def check_now(self, identity: str, limit: int, window: int) -> Verdict:
        """No I/O, so not a coroutine (this runs on every delivery request)."""
        now = time.monotonic()
        processes = self.processes
        interval = window * processes / limit if limit >= processes else float(window)
        tats = self._tat
        tat = tats.get(identity, now)
        if tat < now:
            tat = now
        diff = tat + interval - now
        if diff > window:
            return False, limit, window, 0, math.ceil(diff - interval), max(1, math.ceil(diff - window))
        tats[identity] = tat + interval
        tats.move_to_end(identity)
        if len(tats) > self.MAX_IDENTITIES:
            tats.popitem(last=False)
        # Headers speak of the whole limit: this process's share times the processes.
        return True, limit, window, min(limit, int((window - diff) / interval) * processes), math.ceil(diff), 0

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._heartbeat())

    async def stop(self) -> None:
        await stop_task(self._task)
        try:
            await self.redis.zrem(self._members, self._me)
        except (TimeoutError, aioredis.RedisError, OSError):
            pass
        await self.redis.aclose()

    @property
    def _members(self) -> str:
        return f"{self.prefix}:processes"

    async def _heartbeat(self) -> None:
        while True:
            try:
                now = time.time()
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.zadd(self._members, {self._me: now})
                    pipe.zremrangebyscore(self._members, "-inf", now - 3 * self.HEARTBEAT)
                    pipe.zcard(self._members)
                    *_, count = await pipe.execute()
                self.processes = max(1, int(count))
            except (TimeoutError, aioredis.RedisError, OSError):
                pass  # keep the last count
            await asyncio.sleep(self.HEARTBEAT)


class RateLimits:
    """Pure ASGI around an app: who is asking, their limit, the verdict, the headers."""

    def __init__(self, app: Any, inner: Any) -> None:
        self.app = app  # the Litestar app: settings, credentials, and (set in its lifespan) the limiter
        self.inner = inner
        self._rates: dict[str, tuple[int, int] | None] = {}
        self._policies: dict[tuple[int, int], tuple[bytes, bytes]] = {}
        self._bound: tuple[Any, Any, tuple[int, int], bool] | None = None
        # An inner layer that adds `scope["state"]["rate_headers"]` to its answers itself.
        self._inner_adds_headers = bool(getattr(inner, "adds_rate_headers", False))

    def _bind(self) -> tuple[Any, Any, tuple[int, int], bool] | None:
        """What every request needs from the app's state, looked up once (it is set at startup)."""
        state = self.app.state
        limiter = getattr(state, "limiter", None)
        if limiter is None:
            return None
        delivery = state.app_name == "delivery"
        default = state.settings.rate_limit_delivery if delivery else state.settings.rate_limit_management
        self._bound = (limiter, state.credentials, default, isinstance(limiter, LocalLimiter))
        return self._bound

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT:
            await self.inner(scope, receive, send)
            return
        bound = self._bound or self._bind()
        if bound is None:
            await self.inner(scope, receive, send)
            return
        limiter, credentials, default, local = bound
        presented = presented_in(scope["headers"])
        credential = None
        if presented:
            credential = credentials.cached(presented)
            if credential is None:
                credential = await credentials.resolve(presented, allow_bootstrap=True)
        scope["state"]["presented"] = (presented, credential)  # for the delivery fast path
        if credential is None:
            client = scope.get("client")
            identity, rate = "ip:" + (client[0] if client else "-"), default
        else:
            identity, rate = credential.id, self._rate(credential.rate_limit) or default
        found = limiter.check_now(identity, *rate) if local else await limiter.check(identity, *rate)
        if found is None:
            await self.inner(scope, receive, send)
            return
        allowed, limit, window, remaining, reset, _ = found
        policy = self._policies.get((limit, window))
        if policy is None:
            policy = self._policies[(limit, window)] = (b"ratelimit-policy", f'"default";q={limit};w={window}'.encode())
        headers = (policy, (b"ratelimit", b'"default";r=%d;t=%d' % (remaining, reset)))
        if not allowed:
            await self._refuse(scope, send, credential, found, headers)
            return
        if self._inner_adds_headers:  # the delivery fast path: no wrapper per cache hit
            scope["state"]["rate_headers"] = headers
            await self.inner(scope, receive, send)
            return

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *headers]
            await send(message)

        await self.inner(scope, receive, send_with_headers)

    def _rate(self, own: str | None) -> tuple[int, int] | None:
        """A key's own `rate_limit` ("600/60"), parsed once."""
        if own is None:
            return None
        if own not in self._rates:
            if len(self._rates) > 10_000:
                self._rates.clear()
            self._rates[own] = parse_rate(own)
        return self._rates[own]

    async def _refuse(
        self, scope: dict[str, Any], send: Any, credential: Any, found: Verdict, headers: tuple[tuple[bytes, bytes], ...],
    ) -> None:
        _, limit, window, _, _, retry_after = found
        request_id = scope.get("state", {}).get("request_id")
        problem = ProblemError(429, "rate-limited", f"more than {limit} requests in {window} s; retry in {retry_after} s")
        body = problem_body(problem, request_id)
        state = self.app.state
        denied = getattr(state, "denied", None)
        if denied is not None and state.app_name == "management":
            client = scope.get("client")
            actor = credential.actor() if credential is not None else {"kind": "anonymous", "id": None, "name": None}
            denied.note(actor, f"{scope.get('method', '')} {scope['path']}", request_id, client[0] if client else None)
        await send({"type": "http.response.start", "status": 429, "headers": [
            (b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(retry_after).encode()), *headers,
        ]})
        await send({"type": "http.response.body", "body": body})
