"""Fixed IPs for instances, from the cluster's instance network. Pure.

Which addresses are taken is the `/computed/ips/<ip>` keys (the cache mirrors
them); a create writes its addresses' keys in the same transaction as its
claims, comparing each to "absent", so two schedulers can never hand out one
address twice. A delete removes the key. The MAC follows from the address
(52:54:00 + its last three bytes), so it is unique wherever the address is.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Collection


@dataclasses.dataclass(frozen=True)
class InstanceNetwork:
    network: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address
    first: ipaddress.IPv4Address
    last: ipaddress.IPv4Address

    @classmethod
    def parse(cls, network: str, gateway: str, span: str) -> InstanceNetwork:
        """From --instance-network CIDR, --instance-gateway IP, --instance-range FIRST-LAST;
        ValueError naming the flag that is wrong."""
        try:
            net = ipaddress.IPv4Network(network, strict=True)
        except ValueError as e:
            raise ValueError(f"--instance-network {network!r}: {e}") from None
        try:
            gw = ipaddress.IPv4Address(gateway)
            first_text, _, last_text = span.partition("-")
            first, last = ipaddress.IPv4Address(first_text), ipaddress.IPv4Address(last_text)
        except ValueError as e:
            raise ValueError(f"--instance-gateway/--instance-range: {e}") from None
        hosts = (net.network_address, net.broadcast_address)
        if gw not in net or not (first in net and last in net) or first > last:
            raise ValueError(f"--instance-range {span} and the gateway must lie in {net}")
        if first in hosts or last in hosts or first <= gw <= last:
            raise ValueError(f"--instance-range {span}: not the network, broadcast or gateway")
        return cls(net, gw, first, last)

    def pick(self, taken: Collection[str], n: int) -> list[str]:
        """The n lowest free addresses of the range; fewer if it is nearly full."""
        out: list[str] = []
        address = self.first
        while address <= self.last and len(out) < n:
            if str(address) not in taken:
                out.append(str(address))
            address += 1
        return out

    def interface(self, address: str) -> str:
        return f"{address}/{self.network.prefixlen}"


def mac_for(address: str) -> str:
    a = ipaddress.IPv4Address(address).packed
    return f"52:54:00:{a[1]:02x}:{a[2]:02x}:{a[3]:02x}"
