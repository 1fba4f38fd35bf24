"""Zeroconf (mDNS) announcement of a Wyoming server as `_wyoming._tcp.local.`.

Home Assistant discovers the service and builds its unique id from the instance name, so the
name must stay the same across restarts: it comes from the config (`wyoming.zeroconf_name`,
else `satellite.name`), never from anything random.

The address announced is the listening address; for a wildcard (`0.0.0.0`) it is the address
of the interface that routes to the mDNS group, found without sending anything. A server on a
loopback address is announced on loopback only (tests).
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket

from zeroconf import InterfaceChoice, IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

_LOG = logging.getLogger("satellite.zeroconf")

SERVICE_TYPE = "_wyoming._tcp.local."
MDNS_GROUP = "224.0.0.251"
MAX_LABEL = 63
"""DNS labels (the instance name included) are at most 63 bytes."""


class AnnounceError(Exception):
    """The service could not be announced; the message says why."""


def instance_name(name: str) -> str:
    """`name` as a valid mDNS instance label: no dots, at most 63 bytes of UTF-8."""
    label = re.sub(r"[.\x00-\x1f]+", "-", name).strip(" -") or "lfm-satellite"
    encoded = label.encode()[:MAX_LABEL]
    return encoded.decode(errors="ignore")


def host_label(name: str) -> str:
    """A host name for the service's SRV record: letters, digits and dashes."""
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:MAX_LABEL] or "lfm-satellite"


def announce_address(host: str) -> str:
    """The IPv4 address to announce for a server listening on `host`."""
    if host in ("", "0.0.0.0", "::"):
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.connect((MDNS_GROUP, 5353))
            return str(probe.getsockname()[0])
        except OSError:
            _LOG.warning("no network route for mDNS; announcing 127.0.0.1 only")
            return "127.0.0.1"
        finally:
            probe.close()
    try:
        return str(ipaddress.IPv4Address(host))
    except ValueError:
        return socket.gethostbyname(host)


class Announcer:
    """One registered service; `start` registers it, `stop` unregisters and closes."""

    def __init__(self, name: str, port: int, host: str) -> None:
        self.name = instance_name(name)
        self.port = port
        self.address = announce_address(host)
        self.full_name = f"{self.name}.{SERVICE_TYPE}"
        self._zeroconf: AsyncZeroconf | None = None
        self._info: AsyncServiceInfo | None = None

    async def start(self) -> None:
        loopback = ipaddress.IPv4Address(self.address).is_loopback
        try:
            self._zeroconf = AsyncZeroconf(
                interfaces=[self.address] if loopback else InterfaceChoice.All,
                ip_version=IPVersion.V4Only,
            )
            self._info = AsyncServiceInfo(
                SERVICE_TYPE,
                self.full_name,
                addresses=[socket.inet_aton(self.address)],
                port=self.port,
                server=f"{host_label(self.name)}.local.",
            )
            await self._zeroconf.async_register_service(self._info)
        except Exception as err:
            await self.stop()
            raise AnnounceError(f"zeroconf: cannot announce {self.full_name!r}: {err}") from err
        _LOG.info("zeroconf: announced %r at %s:%d", self.full_name, self.address, self.port)

    async def stop(self) -> None:
        zeroconf, info = self._zeroconf, self._info
        self._zeroconf = self._info = None
        if zeroconf is None:
            return
        try:
            if info is not None:
                await zeroconf.async_unregister_service(info)
                _LOG.info("zeroconf: withdrew %r", self.full_name)
        finally:
            await zeroconf.async_close()
