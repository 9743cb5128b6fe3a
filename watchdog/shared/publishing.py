"""Publishing a serving process's endpoints when the disk will not take them.

A component that cannot write `run/<component>.json` (ENOSPC on a full disk)
must not exit for it: a restart cannot free space, and the crash-loop backoff
would keep it down after space returns. It serves anyway, says so once, and
publishes in the background as soon as the file can be written.
"""
from __future__ import annotations

from collections.abc import Coroutine
from pathlib import Path

from loguru import logger
from tenacity import AsyncRetrying, retry_if_exception_type, wait_fixed

from watchdog.shared import endpoints

PUBLISH_RETRY = 0.5  # seconds between attempts to publish endpoints that could not be written (full disk)


def publish_or_retry(data_dir: Path, component: str, published: dict[str, str]) -> Coroutine[None, None, None] | None:
    """Publish now; if that cannot be written, log it and return the coroutine that retries every
    PUBLISH_RETRY s until it is (the caller runs it in the background and cancels it on the way out)."""
    try:
        endpoints.publish(data_dir, component, published)
        return None
    except OSError as exc:
        logger.error("{}: cannot publish {} in {} ({}): serving anyway, retrying every {:g} s", component, published,
                     endpoints.run_dir(data_dir), exc.strerror or exc, PUBLISH_RETRY)
    return _publish_later(data_dir, component, published)


async def _publish_later(data_dir: Path, component: str, published: dict[str, str]) -> None:
    async for attempt in AsyncRetrying(wait=wait_fixed(PUBLISH_RETRY), retry=retry_if_exception_type(OSError)):
        with attempt:
            endpoints.publish(data_dir, component, published)
    logger.info("{}: published {}", component, published)
