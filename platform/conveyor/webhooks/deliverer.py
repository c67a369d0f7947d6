"""``conveyor webhooks``: the process that delivers webhooks, and keeps trying.

It claims due deliveries from Redis (:mod:`conveyor.webhooks.db`), POSTs each as
the result object plus ``"event"``, signed (:mod:`.signing`), and settles it:

- 2xx: delivered;
- a connection error, a timeout (``[webhooks] timeout``), 429 or 5xx: tried again after
  ``[webhooks] retry_schedule`` (5 s, 30 s, 2 min, 10 min, 30 min, 1 h, then every 2 h;
  ±20 % jitter) or the receiver's ``Retry-After``, until ``[webhooks] max_age`` after the
  event; then failed;
- 410: failed, the receiver is gone; any other 4xx or a 3xx (redirects are never
  followed): failed;
- an address the SSRF guard refuses (DNS changed since the request was accepted): failed.

At most ``[webhooks] concurrency`` deliveries run at once, at most ``per_host`` of them to
one host: a slow or dead receiver holds its own slots only. Several deliverers may run
against one Redis; a delivery is held by one at a time (a lease), and one that dies loses
its claims when their lease ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import aiohttp

from conveyor.auth.db import ApiKeyStore
from conveyor.guard import Guard, RefusedAddressError, guarded_connector
from conveyor.invocations.records import InvocationRecord
from conveyor.log import get_logger
from conveyor.maps.db import MapJob
from conveyor.results import map_job_body, result_body, with_urls
from conveyor.settings import WebhookSettings
from conveyor.streams import db as streams
from conveyor.webhooks import signing
from conveyor.webhooks.db import Delivery, WebhookQueue

log = get_logger(__name__)

LEASE_MARGIN = 30.0  # seconds past the request timeout before a claim lapses
BUSY_RETRY = 1.0  # seconds before a delivery to a busy host is looked at again
MAX_RETRY_AFTER = 7200.0


class Deliverer:
    """Delivers what is due until stopped."""

    def __init__(
        self,
        settings: WebhookSettings,
        queue: WebhookQueue,
        api_keys: ApiKeyStore,
        *,
        files_base: str = "",
    ) -> None:
        self.settings = settings
        self.files_base = files_base  # output files' URLs are on it ([api] public_url)
        self.queue = queue
        self.api_keys = api_keys  # an owner's own signing secret
        self.guard = Guard(tuple(settings.allow_networks))
        self._running: set[asyncio.Task[None]] = set()
        self._per_host: Counter[str] = Counter()
        self._stop = asyncio.Event()

    @property
    def lease(self) -> float:
        return self.settings.timeout + LEASE_MARGIN

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        connector = guarded_connector(self.guard, limit=self.settings.concurrency)
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            log.info("webhooks_started", concurrency=self.settings.concurrency)
            while not self._stop.is_set():
                try:
                    await self._round(session)
                except Exception as exc:  # Redis away: keep trying, every second
                    log.warning("webhooks_round_failed", error=str(exc))
                    await asyncio.sleep(1.0)
            if self._running:
                await asyncio.wait(self._running)

    async def _round(self, session: aiohttp.ClientSession) -> None:
        free = self.settings.concurrency - len(self._running)
        claimed = await self.queue.claim(time.time(), self.lease, free) if free > 0 else []
        for delivery in claimed:
            host = (urlsplit(delivery.url).hostname or "").lower()
            if self._per_host[host] >= self.settings.per_host:
                await self.queue.postpone(delivery, time.time() + BUSY_RETRY)
                continue
            self._per_host[host] += 1
            task = asyncio.create_task(self._deliver(session, delivery, host))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        if not claimed:
            due = await self.queue.next_due()
            pause = 1.0 if due is None else min(1.0, due - time.time())
            if pause > 0:
                await self.queue.wait(pause)
        elif free <= len(claimed):  # full: let a delivery finish before claiming more
            await asyncio.sleep(0.01)

    async def _deliver(self, session: aiohttp.ClientSession, delivery: Delivery, host: str) -> None:
        try:
            await self._attempt(session, delivery)
        except Exception:
            log.exception("webhook_delivery_crashed", delivery=delivery.id)
        finally:
            self._per_host[host] -= 1
            if self._per_host[host] <= 0:
                del self._per_host[host]

    async def _attempt(self, session: aiohttp.ClientSession, delivery: Delivery) -> None:
        attempts = delivery.attempts + 1
        if delivery.of_map_job:
            view = map_job_body(MapJob.from_hash(delivery.invocation, delivery.record))
        else:
            record = InvocationRecord.from_hash(delivery.invocation, delivery.record)
            view = result_body(record, base=self.files_base)
            if delivery.event == "output":  # the chunks so far, read as it is sent
                chunks = await streams.outputs(self.queue.redis, record.id, record.attempts)
                view["output"] = with_urls(chunks, None, self.files_base)
        # Signed with the rest: whose invocation it was (null without keys), so a receiver
        # can tell one team's delivery from another's replayed to it.
        owner = delivery.record.get("owner") or None
        body = json.dumps(
            {**view, "event": delivery.event, "owner": owner}, separators=(",", ":")
        ).encode()
        own = await self.api_keys.webhook_secret(owner) if owner else None
        started = time.monotonic()
        retry_after: float | None = None
        try:
            stamp = int(time.time())
            secrets = [own] if own else self.settings.secrets
            headers = signing.headers(secrets, delivery.id, stamp, body)
            async with session.post(
                delivery.url, data=body, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
                retry_after = _retry_after(response.headers.get("Retry-After"))
        except RefusedAddressError as exc:
            await self._give_up(delivery, attempts, f"refused: {exc}")
            return
        except aiohttp.InvalidURL as exc:  # it will not become valid
            await self._give_up(delivery, attempts, f"refused: {exc}")
            return
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, RefusedAddressError):
                await self._give_up(delivery, attempts, f"refused: {exc.os_error}")
                return
            await self._later(delivery, attempts, f"cannot connect: {exc}", None)
            return
        except (aiohttp.ClientError, TimeoutError) as exc:
            await self._later(delivery, attempts, f"{type(exc).__name__}: {exc}".strip(": "), None)
            return
        elapsed = round((time.monotonic() - started) * 1000, 1)
        if 200 <= status < 300:
            await self.queue.settle(delivery, "delivered", attempts)
            log.info("webhook_delivered", delivery=delivery.id, attempts=attempts, ms=elapsed)
        elif status == 429 or status >= 500:
            await self._later(delivery, attempts, f"the receiver answered {status}", retry_after)
        elif status == 410:
            await self._give_up(delivery, attempts, "the receiver answered 410: it is gone")
        else:
            await self._give_up(delivery, attempts, f"the receiver answered {status}")

    async def _later(
        self, delivery: Delivery, attempts: int, error: str, retry_after: float | None
    ) -> None:
        schedule = self.settings.retry_schedule
        delay = schedule[min(attempts, len(schedule)) - 1] * random.uniform(0.8, 1.2)
        if retry_after is not None:
            delay = min(max(retry_after, 0.0), MAX_RETRY_AFTER)
        at = time.time() + delay
        if at > delivery.created_at + self.settings.max_age:
            await self._give_up(delivery, attempts, f"{error}; gave up after {attempts} attempts")
            return
        await self.queue.settle(delivery, "pending", attempts, error, retry_at=at)
        log.info(
            "webhook_retrying",
            delivery=delivery.id,
            attempts=attempts,
            error=error,
            delay=round(delay, 1),
        )

    async def _give_up(self, delivery: Delivery, attempts: int, error: str) -> None:
        await self.queue.settle(delivery, "failed", attempts, error)
        log.warning("webhook_failed", delivery=delivery.id, attempts=attempts, error=error)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (a number of seconds or an HTTP date)."""
    if value is None:
        return None
    with contextlib.suppress(ValueError):
        return float(value)
    with contextlib.suppress(TypeError, ValueError):
        return parsedate_to_datetime(value).timestamp() - time.time()
    return None
