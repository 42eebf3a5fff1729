"""UPnP IGD reader of a router's WAN byte counters (``async-upnp-client``, the router
extra; imported only by :func:`agent.methods.common.router.source_for`)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from async_upnp_client.aiohttp import AiohttpRequester
from async_upnp_client.client_factory import UpnpFactory
from async_upnp_client.exceptions import UpnpError

from agent.methods.common.router import Reading, RouterError

if TYPE_CHECKING:
    from agent.runconfig import Router

WAN_COMMON = "urn:schemas-upnp-org:service:WANCommonInterfaceConfig:1"


class UpnpSource:
    """``GetTotalBytesReceived`` / ``GetTotalBytesSent`` of one IGD."""

    def __init__(self, cfg: Router) -> None:
        self.cfg = cfg
        self.service: Any = None

    async def _service(self) -> Any:
        if self.service is None:
            requester = AiohttpRequester(timeout=int(max(1, self.cfg.timeout_s)))
            device = await UpnpFactory(requester).async_create_device(self.cfg.url or "")
            service = device.find_service(WAN_COMMON)
            if service is None:
                raise RouterError(f"upnp {self.cfg.url}: no {WAN_COMMON} service")
            self.service = service
        return self.service

    async def read(self) -> Reading:
        """Both totals, queried together."""
        try:
            service = await self._service()
            t0 = time.monotonic()
            got_rx, got_tx = await asyncio.gather(
                service.action("GetTotalBytesReceived").async_call(),
                service.action("GetTotalBytesSent").async_call())
            at = (t0 + time.monotonic()) / 2
            rx, tx = int(got_rx["NewTotalBytesReceived"]), int(got_tx["NewTotalBytesSent"])
        except RouterError:
            raise
        except (UpnpError, KeyError, ValueError, TypeError, OSError) as exc:
            self.service = None  # describe the device again next time (it may have rebooted)
            raise RouterError(f"upnp {self.cfg.url}: {type(exc).__name__}: {exc}") from exc
        # ui4 in the IGD specification: the totals wrap at 2^32.
        return Reading(rx, tx, at, 2**32)
