"""Which peers may open a FastAGI or AudioSocket connection (`server.allowed_peers`).

Entries are addresses (`10.0.0.5`, `::1`) or networks (`10.0.0.0/24`, `fd00::/64`) for an Asterisk
cluster behind one subnet. A peer that reaches a dual-stack listener as an IPv4-mapped IPv6 address
(`::ffff:10.0.0.5`) is judged by its IPv4 address, so ops write the address they know.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_peer(entry: str) -> Network:
    """One allowed_peers entry as a network; ValueError that names the entry and the accepted forms."""
    try:
        return ipaddress.ip_network(entry.strip(), strict=False)
    except ValueError:
        raise ValueError(
            f"allowed_peers entry {entry!r} is not an IP address or network "
            "(write e.g. 10.0.0.5, 10.0.0.0/24 or ::1; host names are not resolved)"
        ) from None


class PeerAllowList:
    """`allows(host)` for the peer address asyncio reports (`peername[0]`)."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.networks = tuple(parse_peer(entry) for entry in entries)

    def allows(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])  # drop an IPv6 zone (fe80::1%eth0)
        except ValueError:
            return False  # not an IP peer (e.g. a Unix socket): never one of ours
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)
