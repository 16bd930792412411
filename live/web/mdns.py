"""Zeroconf (mDNS/DNS-SD) advertisement: ``_oscjson._tcp`` for OSCQuery and ``_osc._udp`` for OSC.

OSCQuery-aware controllers (Chataigne, Vezér, Max, TouchOSC's OSCQuery browser) list the shows
they find on the network and build their controls from the namespace. The advertisement goes out
only on the interfaces the servers listen on: a show on loopback is found by programs on the
same machine and by nobody else. Registering probes the network for a second or two, so it runs
on its own thread; a network where multicast fails costs a warning, never the show.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import threading
from dataclasses import dataclass

log = logging.getLogger(__name__)

OSCJSON = "_oscjson._tcp.local."
OSC = "_osc._udp.local."


@dataclass(frozen=True)
class Service:
    """One advertised service: its DNS-SD type, instance name, port and addresses."""

    type: str
    name: str
    port: int
    addresses: tuple[str, ...]
    properties: tuple[tuple[str, str], ...] = ()

    @property
    def full_name(self) -> str:
        return f"{self.name}.{self.type}"


def _is_any(host: str) -> bool:
    return host in ("", "0.0.0.0", "::")


def interface_addresses(host: str) -> list[str]:
    """The IPv4 addresses a server bound to ``host`` is reachable on: every non-loopback
    interface's for ``0.0.0.0``, else ``host`` itself (a name is resolved)."""
    if _is_any(host):
        import ifaddr  # python-zeroconf's own dependency

        found = []
        for adapter in ifaddr.get_adapters():
            for ip in adapter.ips:
                if isinstance(ip.ip, str) and not ipaddress.ip_address(ip.ip).is_loopback:
                    found.append(ip.ip)
        return sorted(set(found))
    try:
        return [str(ipaddress.IPv4Address(host))]
    except ValueError:
        pass
    try:
        return sorted({info[4][0] for info in socket.getaddrinfo(host, None, socket.AF_INET)})
    except socket.gaierror:
        return []


def _label(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", text).strip("-") or "deepdream-live"


def plan_services(name: str, web: tuple[str, int], osc: tuple[str, int] | None) -> tuple[list[Service], list[str]]:
    """What to advertise for a web server at ``web`` and an OSC server at ``osc``.

    Returns the services and notes on what was left out and why (for the log). ``_osc._udp`` is
    advertised only where OSC listens on the same interfaces as the web server (it would point
    controllers at a port they cannot reach otherwise).
    """
    notes: list[str] = []
    web_addresses = interface_addresses(web[0])
    if not web_addresses:
        return [], [f"no IPv4 address to advertise for {web[0]}"]
    services = [Service(OSCJSON, name, web[1], tuple(web_addresses), (("txtvers", "1"),))]
    if osc is not None:
        osc_addresses = interface_addresses(osc[0])
        reachable = tuple(a for a in web_addresses if a in osc_addresses or _is_any(osc[0]))
        if reachable:
            services.append(Service(OSC, name, osc[1], reachable))
        else:
            notes.append(f"_osc._udp not advertised: OSC listens on {osc[0]} only")
    return services, notes


class Advertiser:
    """Advertise ``services`` with python-zeroconf while the show runs; ``with Advertiser(...):``."""

    def __init__(self, services: list[Service], host: str) -> None:
        self.services = services
        self.host = host
        self._zeroconf = None
        self._infos: list = []
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False
        self.registered = threading.Event()  # set once every service is out (or registering failed)
        self.error: str | None = None

    def service_infos(self) -> list:
        """The python-zeroconf ``ServiceInfo`` records for :attr:`services`."""
        from zeroconf import ServiceInfo

        server = f"{_label(socket.gethostname())}.local."
        return [
            ServiceInfo(s.type, s.full_name, port=s.port, addresses=[socket.inet_aton(a) for a in s.addresses],
                        properties=dict(s.properties), server=server)
            for s in self.services
        ]  # fmt: skip

    def start(self) -> Advertiser:
        if self.services:
            self._thread = threading.Thread(target=self._register, name="web-mdns", daemon=True)
            self._thread.start()
        else:
            self.registered.set()
        return self

    def _register(self) -> None:
        try:
            from zeroconf import InterfaceChoice, IPVersion, Zeroconf

            interfaces = InterfaceChoice.All if _is_any(self.host) else list(self.services[0].addresses)
            zc = Zeroconf(interfaces=interfaces, ip_version=IPVersion.V4Only)
            with self._lock:
                if self._closed:
                    zc.close()
                    return
                self._zeroconf = zc
            for info in self.service_infos():
                if self._closed:
                    break
                zc.register_service(info, allow_name_change=True)  # a second show gets "name (2)"
                with self._lock:
                    self._infos.append(info)
            log.info("mDNS: advertising %s", ", ".join(f"{i.name} port {i.port}" for i in self._infos))
        except Exception as e:  # noqa: BLE001 - discovery is a convenience; the show goes on without it
            self.error = f"{type(e).__name__}: {e}"
            log.warning("mDNS: could not advertise the show (%s); controllers can still be given its address",
                        self.error)
        finally:
            self.registered.set()

    def close(self) -> None:
        """Withdraw the services (a goodbye packet) and stop; safe to call twice."""
        with self._lock:
            self._closed = True  # a registration still under way stops after the current service
        if self._thread is not None:
            self._thread.join(timeout=15)
        with self._lock:
            zc, infos, self._zeroconf, self._infos = self._zeroconf, self._infos, None, []
        if zc is not None:
            try:
                for info in infos:
                    zc.unregister_service(info)
            except Exception:  # noqa: BLE001 - closing anyway
                log.debug("mDNS: unregistering failed", exc_info=True)
            zc.close()

    def __enter__(self) -> Advertiser:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
