"""Which addresses wagate may push webhooks to (the server-side request forgery guard)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Cloud metadata services answer with credentials; link-local ranges host them. No operator
# setting re-opens these.
ALWAYS_REFUSED: tuple[IpNetwork, ...] = tuple(
    ipaddress.ip_network(cidr)
    for cidr in (
        "169.254.0.0/16",  # IPv4 link-local, AWS/GCP/Azure metadata at 169.254.169.254
        "fe80::/10",  # IPv6 link-local
        "100.100.100.200/32",  # Alibaba Cloud metadata
        "fd00:ec2::254/128",  # AWS metadata over IPv6
        "0.0.0.0/8",  # "this network": connects to the local host on some systems
        "::/128",
        "224.0.0.0/4",  # multicast
        "ff00::/8",
        "255.255.255.255/32",
    )
)


class AddressRefused(Exception):
    """The address may not receive webhooks."""


@dataclass(frozen=True)
class WebhookAddressPolicy:
    """Deny wins over allow; an empty allow list allows every address not refused otherwise,
    loopback and private ranges included (self-hosted receivers live there)."""

    allow: Sequence[IpNetwork] = ()
    deny: Sequence[IpNetwork] = ()

    def check(self, address: str | IpAddress) -> None:
        """Raise `AddressRefused` naming the reason, or return if `address` may be used."""
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # ::ffff:169.254.169.254 is 169.254.169.254
        if any(ip in network for network in ALWAYS_REFUSED):
            raise AddressRefused(f"{ip} is a link-local, metadata or non-unicast address")
        if any(ip in network for network in self.deny):
            raise AddressRefused(f"{ip} is in WAGATE_WEBHOOK_DENY")
        if self.allow and not any(ip in network for network in self.allow):
            raise AddressRefused(f"{ip} is not in WAGATE_WEBHOOK_ALLOW")

    def is_allowed(self, address: str | IpAddress) -> bool:
        try:
            self.check(address)
        except AddressRefused:
            return False
        return True
