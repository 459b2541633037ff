"""Whether a host names this machine: what the dashboard's bind check (``pigeon dashboard``)
and its request check (``pigeon.dashboard.security``) both ask. Standard library only, so
the CLI can ask it without loading the dashboard's extra."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 with or without brackets) is this
    machine: ``localhost`` or a loopback address."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
