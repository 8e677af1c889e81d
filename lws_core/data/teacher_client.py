"""One client for every LLM the project pays for: the stage-1 teacher and the eval judge.

Why this shape (benchmarks/results/teacher.md has the comparison with bespokelabs-curator and the
``openai`` SDK): the wire format of ``/v1/chat/completions`` is one JSON POST, which ``aiohttp``
(already pinned) sends at ~0.2 ms of CPU per request, where the SDK's httpx pool spent ~20 ms at
64 in flight; ``tenacity`` owns the retry policy, which must honour ``Retry-After`` and tell a
rate-limit storm (wait it out) from a broken request (fail at once). Around it:

- **many requests in flight**: an ``asyncio.Semaphore`` of ``concurrency`` on one event loop
  that this client owns in a background thread; sync callers (threads, the judge) submit to it;
- **a shared rate limit**: token buckets for requests and tokens per minute; a 429 with
  ``Retry-After`` pauses every request of the client, not just the one that was refused;
- **a content-addressed response cache** on disk (``diskcache``: SQLite, one atomic commit per
  reply, safe for several processes): the key hashes model, messages, temperature, seed,
  response format and a caller's salt (the teacher's schema version), so a rerun or a resumed
  shard pays for nothing twice (but the replies in flight when a process is killed: billed,
  not yet stored); a torn write cannot survive a crash (SQLite journals it);
- **counts**: paid requests, cache hits, retries, 429s, tokens and cost, for the dataset card
  and the eval report.

A terminal transport failure (timeouts, the server unreachable after the retries) is remembered
in memory by key, so a forked worker that replays a prefetched session rejects it for the same
reason without calling again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

RETRYABLE = (429, 500, 502, 503, 504)


def base_url(endpoint: str) -> str:
    """The SDK's base URL (``…/v1``) from a base URL, a host, or the full completions URL."""
    e = endpoint.rstrip("/")
    if e.endswith("/chat/completions"):
        e = e[: -len("/chat/completions")]
    return e if e.endswith("/v1") else e + "/v1"


@dataclass
class ClientStats:
    """What the client did; ``requests`` are the calls that were answered (and so paid for)."""

    requests: int = 0
    cache_hits: int = 0
    retries: int = 0
    rate_limited: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    cached_prompt_tokens: int = 0  # what the cache hits had cost when they were paid for
    cached_completion_tokens: int = 0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cost_usd"] = round(self.cost_usd, 6)
        d["latency_s"] = round(self.latency_s, 3)
        d["mean_latency_s"] = round(self.latency_s / self.requests, 4) if self.requests else None
        return d

    def add(self, other: dict[str, Any]) -> None:
        """Sum another client's counts (a worker process's) into these."""
        for k in ("requests", "cache_hits", "retries", "rate_limited", "failures", "prompt_tokens", "completion_tokens",
                  "cached_prompt_tokens", "cached_completion_tokens"):
            setattr(self, k, getattr(self, k) + int(other.get(k, 0)))
        self.cost_usd += float(other.get("cost_usd", 0.0))
        self.latency_s += float(other.get("latency_s", 0.0))


@dataclass(frozen=True)
class Completion:
    content: str
    prompt_tokens: int
    completion_tokens: int
    cached: bool


class CallFailed(Exception):
    """The call did not produce a completion: ``kind`` is timeout, unreachable, http or malformed."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


class _Transient(Exception):
    """One attempt failed in a way a retry may fix; ``retry_after`` is the server's hint in seconds."""

    def __init__(self, kind: str, detail: str, retry_after: float | None = None, rate_limited: bool = False) -> None:
        super().__init__(detail)
        self.kind, self.detail, self.retry_after, self.rate_limited = kind, detail, retry_after, rate_limited


def _retry_after(headers: Any) -> float | None:  # noqa: ANN401 - httpx.Headers
    """Seconds from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date); None when absent."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if not ra:
        return None
    try:
        return max(0.0, float(ra))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(ra).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


class RateLimiter:
    """Requests and tokens per minute as two token buckets (burst: ``burst_s`` seconds of budget), plus a
    shared pause: after a 429 with Retry-After nobody sends before the pause ends."""

    def __init__(self, requests_per_minute: int | None, tokens_per_minute: int | None, burst_s: float = 2.0) -> None:
        self.rpm, self.tpm = requests_per_minute or 0, tokens_per_minute or 0
        self.burst_s = burst_s
        self.req = self.rpm / 60 * burst_s
        self.tok = self.tpm / 60 * burst_s
        self.t = time.monotonic()
        self.paused_until = 0.0
        self._lock: asyncio.Lock | None = None

    def _refill(self, now: float) -> None:
        dt, self.t = now - self.t, now
        if self.rpm:
            self.req = min(max(1.0, self.rpm / 60 * self.burst_s), self.req + dt * self.rpm / 60)
        if self.tpm:
            self.tok = min(max(1.0, self.tpm / 60 * self.burst_s), self.tok + dt * self.tpm / 60)

    async def acquire(self, tokens: int) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # FIFO: requests leave in the order they asked
            while True:
                now = time.monotonic()
                if now < self.paused_until:
                    await asyncio.sleep(self.paused_until - now)
                    continue
                self._refill(now)
                # a request larger than the whole burst may go once the bucket is full
                need_t = min(tokens, max(1.0, self.tpm / 60 * self.burst_s)) if self.tpm else 0
                wait = 0.0
                if self.rpm and self.req < 1:
                    wait = max(wait, (1 - self.req) * 60 / self.rpm)
                if self.tpm and self.tok < need_t:
                    wait = max(wait, (need_t - self.tok) * 60 / self.tpm)
                if wait <= 0:
                    if self.rpm:
                        self.req -= 1
                    if self.tpm:
                        self.tok -= tokens
                    return
                await asyncio.sleep(wait)

    def settle(self, estimated: int, actual: int) -> None:
        """Correct the token bucket once the reply says how many tokens the request really used."""
        if self.tpm:
            self.tok -= actual - estimated

    def pause(self, seconds: float) -> None:
        self.paused_until = max(self.paused_until, time.monotonic() + seconds)


class LLMClient:
    """An OpenAI-compatible chat client: concurrent, rate-limited, retried, cached, counted.

    ``await acomplete(...)`` inside an event loop, or ``complete(...)`` from any thread (it runs on
    the client's own loop, so every thread of a process shares one limiter and one semaphore).
    """

    def __init__(
        self,
        endpoint: str,
        model: str,
        api_key: str | None = None,
        *,
        concurrency: int = 64,
        requests_per_minute: int | None = None,
        tokens_per_minute: int | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        max_backoff_s: float = 60.0,
        rate_limit_patience_s: float = 900.0,
        cache_dir: str | Path | None = None,
        usd_per_1k_input: float = 0.0,
        usd_per_1k_output: float = 0.0,
        max_tokens: int | None = None,
        remember_failures: bool = False,
    ) -> None:
        self.base_url = base_url(endpoint)
        self.url = self.base_url + "/chat/completions"
        self.model, self.api_key = model, api_key
        self.concurrency = max(1, int(concurrency))
        self.timeout_s, self.max_retries = timeout_s, max_retries
        self.backoff_s, self.max_backoff_s, self.patience_s = backoff_s, max_backoff_s, rate_limit_patience_s
        self.prices = (usd_per_1k_input, usd_per_1k_output)
        self.max_tokens = max_tokens
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.limiter = RateLimiter(requests_per_minute, tokens_per_minute)
        self.stats = ClientStats()
        self.remember_failures = remember_failures
        self.failed: dict[str, CallFailed] = {}  # terminal failures by key (inherited by forked workers)
        self._inflight: dict[str, asyncio.Future] = {}
        self._stats_lock = threading.Lock()
        self._init_lock = threading.RLock()
        self._pid = -1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._http: Any = None
        self._sem: asyncio.Semaphore | None = None
        self._cache: Any = None

    # -- per-process state (safe after fork: a child builds its own) ----------------------------------
    def _ensure_process(self) -> None:
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._init_lock = threading.RLock()  # a lock held at fork time would stay held in the child
        self._inflight = {}
        self._loop = self._thread = self._http = self._sem = self._cache = None
        self.limiter = RateLimiter(self.limiter.rpm or None, self.limiter.tpm or None, self.limiter.burst_s)

    def cache(self) -> Any:  # noqa: ANN401 - diskcache.Cache
        self._ensure_process()
        with self._init_lock:
            if self._cache is None and self.cache_dir is not None:
                import diskcache

                self.cache_dir.mkdir(parents=True, exist_ok=True)
                # no eviction: a paid reply is kept until someone deletes the directory
                self._cache = diskcache.Cache(str(self.cache_dir), size_limit=2**62, cull_limit=0, eviction_policy="none")
        return self._cache

    def _client(self) -> Any:  # noqa: ANN401 - aiohttp.ClientSession, bound to the running loop
        if self._http is None:
            import aiohttp

            headers = {"Content-Type": "application/json"}
            if self.api_key:
                headers["Authorization"] = f"Bearer {self.api_key}"
            self._http = aiohttp.ClientSession(
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                connector=aiohttp.TCPConnector(limit=self.concurrency),
            )
            self._sem = asyncio.Semaphore(self.concurrency)
        return self._http

    def _background_loop(self) -> asyncio.AbstractEventLoop:
        self._ensure_process()
        with self._init_lock:  # many threads ask at once: exactly one loop
            if self._loop is None:
                loop = asyncio.new_event_loop()
                t = threading.Thread(target=loop.run_forever, name="llm-client", daemon=True)
                t.start()
                self._loop, self._thread = loop, t
        return self._loop

    def close(self) -> None:
        """Stop the background loop and close connections and the cache (a later call reopens them)."""
        if self._pid != os.getpid():
            return
        if self._loop is not None:
            if self._http is not None:
                asyncio.run_coroutine_threadsafe(self._http.close(), self._loop).result(timeout=10)
                self._http = None
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=10)
            self._loop.close()
        if self._cache is not None:
            self._cache.close()
        self._loop = self._thread = self._http = self._sem = self._cache = None

    async def aclose(self) -> None:
        """Close the HTTP session from the event loop that used :meth:`acomplete` directly."""
        if self._http is not None:
            await self._http.close()
            self._http = self._sem = None

    # -- keys -------------------------------------------------------------------------------------
    def key(self, messages: list[dict[str, str]], temperature: float, seed: int | None = None,
            response_format: dict[str, Any] | None = None, salt: str = "") -> str:
        blob = json.dumps(
            {"model": self.model, "messages": messages, "temperature": temperature, "seed": seed,
             "response_format": response_format, "salt": salt},
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()

    def cached(self, key: str) -> Completion | None:
        c = self.cache()
        v = c.get(key) if c is not None else None
        if not isinstance(v, dict) or "content" not in v:
            return None
        return Completion(v["content"], int(v.get("prompt_tokens", 0)), int(v.get("completion_tokens", 0)), True)

    # -- calls ------------------------------------------------------------------------------------
    def complete(self, messages: list[dict[str, str]], *, temperature: float = 0.0, seed: int | None = None,
                 response_format: dict[str, Any] | None = None, salt: str = "") -> Completion:
        """Blocking form of :meth:`acomplete`, callable from any thread of the process."""
        key = self.key(messages, temperature, seed, response_format, salt)
        hit = self._hit(key)
        if hit is not None:
            return hit
        fut = asyncio.run_coroutine_threadsafe(
            self.acomplete(messages, temperature=temperature, seed=seed, response_format=response_format, salt=salt),
            self._background_loop(),
        )
        return fut.result()

    def _hit(self, key: str) -> Completion | None:
        if key in self.failed:
            raise self.failed[key]
        hit = self.cached(key)
        if hit is not None:
            with self._stats_lock:
                self.stats.cache_hits += 1
                self.stats.cached_prompt_tokens += hit.prompt_tokens
                self.stats.cached_completion_tokens += hit.completion_tokens
        return hit

    async def acomplete(self, messages: list[dict[str, str]], *, temperature: float = 0.0, seed: int | None = None,
                        response_format: dict[str, Any] | None = None, salt: str = "") -> Completion:
        """The completion for one request: from the cache, or paid once (with retries) and then cached.

        Raises :class:`CallFailed` (timeout, unreachable, http, malformed) when no completion came.
        Identical requests in flight at once are sent once.
        """
        self._ensure_process()
        key = self.key(messages, temperature, seed, response_format, salt)
        hit = self._hit(key)
        if hit is not None:
            return hit
        twin = self._inflight.get(key)
        if twin is not None:  # the same request is already on its way: share its answer, pay once
            result = await asyncio.shield(twin)
            with self._stats_lock:
                self.stats.cache_hits += 1
                self.stats.cached_prompt_tokens += result.prompt_tokens
                self.stats.cached_completion_tokens += result.completion_tokens
            return Completion(result.content, result.prompt_tokens, result.completion_tokens, True)
        fut: asyncio.Future[Completion] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())  # nobody waiting is fine
        self._inflight[key] = fut
        try:
            result = await self._pay(key, messages, temperature, seed, response_format)
        except BaseException as e:
            if not fut.done():
                fut.set_exception(e if isinstance(e, Exception) else asyncio.CancelledError())
            raise
        else:
            fut.set_result(result)
            return result
        finally:
            self._inflight.pop(key, None)

    async def _pay(self, key: str, messages: list[dict[str, str]], temperature: float, seed: int | None,
                   response_format: dict[str, Any] | None) -> Completion:
        """One request paid for (with retries) and cached."""
        from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

        self._client()
        estimate = sum(len(m.get("content") or "") for m in messages) // 4 + (self.max_tokens or 256)

        def stop(rs: RetryCallState) -> bool:
            e = rs.outcome.exception() if rs.outcome else None
            if isinstance(e, _Transient) and e.rate_limited:  # a storm: wait it out, up to the patience
                return rs.seconds_since_start >= self.patience_s
            non_429 = getattr(rs, "lws_errors", 0) + 1
            rs.lws_errors = non_429  # type: ignore[attr-defined]
            return non_429 > self.max_retries

        def wait(rs: RetryCallState) -> float:
            e = rs.outcome.exception() if rs.outcome else None
            if isinstance(e, _Transient) and e.retry_after is not None:
                return min(e.retry_after, self.max_backoff_s)
            n = rs.attempt_number - 1
            return min(self.backoff_s * 2**n, self.max_backoff_s) * (0.75 + 0.5 * random.random())

        def before_sleep(rs: RetryCallState) -> None:
            with self._stats_lock:
                self.stats.retries += 1

        try:
            async for attempt in AsyncRetrying(stop=stop, wait=wait, retry=retry_if_exception_type(_Transient),
                                               before_sleep=before_sleep, reraise=True):
                with attempt:
                    result = await self._once(messages, temperature, seed, response_format, estimate)
        except _Transient as e:
            fail = CallFailed(e.kind, f"{e.detail} after {self.max_retries} retries")
            with self._stats_lock:
                self.stats.failures += 1
            if self.remember_failures:
                self.failed[key] = fail
            raise fail from None
        except CallFailed:
            with self._stats_lock:
                self.stats.failures += 1
            raise
        c = self.cache()
        if c is not None:
            await asyncio.to_thread(c.set, key, {"content": result.content, "prompt_tokens": result.prompt_tokens,
                                                 "completion_tokens": result.completion_tokens, "model": self.model})
        return result

    async def _once(self, messages: list[dict[str, str]], temperature: float, seed: int | None,
                    response_format: dict[str, Any] | None, estimate: int) -> Completion:
        import aiohttp

        session = self._client()
        assert self._sem is not None
        body: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": temperature}
        if seed is not None:
            body["seed"] = seed
        if response_format is not None:
            body["response_format"] = response_format
        if self.max_tokens:
            body["max_tokens"] = self.max_tokens
        async with self._sem:
            await self.limiter.acquire(estimate)
            t0 = time.perf_counter()
            try:
                async with session.post(self.url, json=body) as r:
                    status, headers, text = r.status, r.headers, await r.text()
            except TimeoutError:
                raise _Transient("timeout", "timeout") from None
            except aiohttp.ClientError as e:
                raise _Transient("unreachable", f"connection failed ({type(e).__name__}: {e})") from None
            dt = time.perf_counter() - t0
        if status != 200:
            hint = _retry_after(headers)
            if status in RETRYABLE or status >= 500:
                if status == 429:
                    with self._stats_lock:
                        self.stats.rate_limited += 1
                    if hint is not None:
                        self.limiter.pause(min(hint, self.max_backoff_s))
                raise _Transient("http", f"HTTP {status}: {text[:120]}", hint, status == 429)
            raise CallFailed("http", f"HTTP {status}: {text[:120]}")
        with self._stats_lock:
            self.stats.requests += 1  # answered, so paid for, whatever it says
            self.stats.latency_s += dt
        try:
            data = json.loads(text)
            content = data["choices"][0]["message"]["content"]
            usage = data.get("usage") or {}
            pt, ct = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise CallFailed("malformed", f"reply is not a chat completion: {text[:120]}") from None
        self.limiter.settle(estimate, pt + ct if (pt or ct) else estimate)
        with self._stats_lock:
            s = self.stats
            s.prompt_tokens += pt
            s.completion_tokens += ct
            s.cost_usd += pt / 1000 * self.prices[0] + ct / 1000 * self.prices[1]
        return Completion(content or "", pt, ct, False)
