"""Refuse webhook URLs that would make the CMS call its own network (SSRF).

`check_url` parses a URL strictly, resolves its host and refuses it if any address is internal.
The caller then connects to the returned address (keeping the name for Host and SNI), so a DNS
answer that changes between the check and the request cannot redirect the delivery inside.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]

MAX_URL_LENGTH = 2048
RESOLVE_TIMEOUT_SECONDS = 5.0
DEFAULT_PORTS = {"http": 80, "https": 443}
ALLOW_PRIVATE_HINT = "allowed only with CMS_WEBHOOK_ALLOW_PRIVATE=1"

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

# Checked before the ranges so messages name the worst case. All but Azure's also fall in a range below.
CLOUD_METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(text)
    for text in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean...
        "fd00:ec2::254",  # AWS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud
        "168.63.129.16",  # Azure WireServer: a public address that only answers from inside Azure
    )
)

# Explicit tables rather than ipaddress's is_private alone, whose lists change between Python releases.
UNSAFE_IPV4_NETWORKS: tuple[tuple[_V4, str], ...] = tuple(
    (_V4(network), category)
    for network, category in (
        ("0.0.0.0/8", "unspecified ('this network')"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "carrier-grade NAT (shared)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "reserved (IETF protocol assignments)"),
        ("192.0.2.0/24", "reserved (documentation)"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "reserved (benchmarking)"),
        ("198.51.100.0/24", "reserved (documentation)"),
        ("203.0.113.0/24", "reserved (documentation)"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved (incl. broadcast)"),
    )
)

UNSAFE_IPV6_NETWORKS: tuple[tuple[_V6, str], ...] = tuple(
    (_V6(network), category)
    for network, category in (
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("64:ff9b:1::/48", "private (local-use NAT64)"),
        ("100::/64", "reserved (discard-only)"),
        ("2001::/23", "reserved (IETF protocol assignments, incl. Teredo)"),
        ("2001:db8::/32", "reserved (documentation)"),
        ("fc00::/7", "private (unique local)"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "private (site-local)"),
        ("ff00::/8", "multicast"),
    )
)

GLOBAL_UNICAST_IPV6 = _V6("2000::/3")
# IPv6 forms that carry an IPv4 address: they reach whatever that IPv4 address reaches.
IPV4_MAPPED = _V6("::ffff:0:0/96")
IPV4_COMPATIBLE = _V6("::/96")
NAT64_WELL_KNOWN = _V6("64:ff9b::/96")

_HOST_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_FORBIDDEN_URL_CHARACTERS = re.compile(r"[\x00-\x20\x7f\\]")


class UnsafeUrl(ValueError):
    """A webhook URL the CMS will not call; the message is meant for the API client (a 422 detail)."""


@dataclass(frozen=True, slots=True)
class Target:
    """A syntactically valid webhook URL, split into what a pinned connection needs."""

    scheme: str
    host: str  # lower-case ASCII (IDNA for non-ASCII names); an IPv4 in dotted quad; IPv6 without brackets
    port: int
    path_and_query: str
    url: str

    @property
    def host_header(self) -> str:
        """The Host header value: brackets around IPv6, the port only when it is not the default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"


METADATA = "cloud metadata"


def unsafe_address_category(ip: IPAddress) -> str | None:
    """Why `ip` must not be called ("loopback", "cloud metadata", ...), or None when it is public."""
    if ip in CLOUD_METADATA_ADDRESSES:
        return METADATA
    if isinstance(ip, ipaddress.IPv6Address):
        for network6, category in UNSAFE_IPV6_NETWORKS:
            if ip in network6:
                return category
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            embedded_category = unsafe_address_category(embedded)
            if embedded_category is None and ip in IPV4_COMPATIBLE:
                return "reserved (deprecated IPv4-compatible)"
            return embedded_category
        if ip.scope_id is not None:
            return "link-local (scoped)"
        if ip not in GLOBAL_UNICAST_IPV6:
            return "reserved"
    else:
        for network4, category in UNSAFE_IPV4_NETWORKS:
            if ip in network4:
                return category
    # Belt and braces: anything the standard library knows to be special is refused as well.
    if ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved:
        return "private or reserved"
    if ip.is_unspecified:
        return "unspecified"
    return None


def is_unsafe_address(ip: IPAddress) -> bool:
    """True for any address a webhook must not reach: internal, special-purpose or cloud metadata."""
    return unsafe_address_category(ip) is not None


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv4-mapped, -compatible, NAT64 or 6to4 IPv6 address delivers to."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in IPV4_COMPATIBLE or ip in NAT64_WELL_KNOWN:
        return ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)
    return ip.sixtofour


def parse_ipv4_host(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address a host spells in any inet_aton/WHATWG form (`2130706433`, `0x7f.1`, `0177.0.0.1`,
    `127.1`), None for a name. UnsafeUrl for a host that looks numeric but is no valid address,
    because HTTP clients and resolvers disagree about such hosts."""
    parts = host.split(".")
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()  # a trailing dot, as in "127.0.0.1."
    if not parts or not _is_number(parts[-1]):
        return None
    numbers = [_parse_number(part, host) for part in parts]
    if len(numbers) > 4 or any(number > 255 for number in numbers[:-1]):
        raise UnsafeUrl(f"the host {host!r} is not a valid IPv4 address")
    if numbers[-1] >= 256 ** (5 - len(numbers)):
        raise UnsafeUrl(f"the host {host!r} is not a valid IPv4 address")
    value = numbers[-1]
    for index, number in enumerate(numbers[:-1]):
        value += number << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


def _is_number(part: str) -> bool:
    """Whether a host label reads as a number (decimal, 0x-hex or 0-octal), as URL parsers decide."""
    if part[:2] in ("0x", "0X"):
        return all(character in "0123456789abcdefABCDEF" for character in part[2:])
    return part != "" and all(character in "0123456789" for character in part)


def _parse_number(part: str, host: str) -> int:
    """One numeric label: 0x-prefix hexadecimal, leading-zero octal, otherwise decimal."""
    try:
        if part[:2] in ("0x", "0X"):
            return int(part[2:] or "0", 16)
        if len(part) > 1 and part.startswith("0"):
            return int(part[1:], 8)
        return int(part, 10)
    except ValueError:
        raise UnsafeUrl(f"the host {host!r} is not a valid IPv4 address") from None


def _normalise_host(raw_host: str) -> tuple[str, IPAddress | None]:
    """The host as it will be sent (lower-case ASCII) and the address it spells if it is an IP literal."""
    if raw_host.startswith("["):
        if not raw_host.endswith("]") or "%" in raw_host:
            raise UnsafeUrl(f"the host {raw_host!r} is not a valid IPv6 address")
        try:
            ip6 = ipaddress.IPv6Address(raw_host[1:-1])
        except ValueError:
            raise UnsafeUrl(f"the host {raw_host!r} is not a valid IPv6 address") from None
        return str(ip6), ip6
    host = raw_host.lower()
    if not host.isascii():
        try:
            # Also maps full-width digits and ideographic dots, so "１２７。０。０。１" is caught below.
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise UnsafeUrl(f"the host {raw_host!r} is not a valid internationalised domain name") from None
    ip4 = parse_ipv4_host(host)
    if ip4 is not None:
        return str(ip4), ip4
    name = host.removesuffix(".")
    if len(name) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in name.split(".")):
        raise UnsafeUrl(f"the host {raw_host!r} is not a valid host name")
    return host, None


def parse_target(url: str) -> Target:
    """Syntax checks only (no DNS): http(s), a host, no credentials, a valid port, at most 2048 characters."""
    return _parse(url)[0]


def _parse(url: str) -> tuple[Target, IPAddress | None]:
    """The target and, when the host is an IP literal in any spelling, the address it means."""
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeUrl(f"the webhook URL is longer than {MAX_URL_LENGTH} characters")
    if _FORBIDDEN_URL_CHARACTERS.search(url):
        raise UnsafeUrl("the webhook URL must not contain spaces, control characters or backslashes")
    try:
        parts = urlsplit(url)
    except ValueError as error:
        raise UnsafeUrl(f"the webhook URL is malformed: {error}") from None
    if parts.scheme not in DEFAULT_PORTS:
        raise UnsafeUrl("the webhook URL must start with http:// or https://")
    netloc = parts.netloc
    if "@" in netloc:
        raise UnsafeUrl("the webhook URL must not contain a user name or password (user:password@)")
    raw_host, port_text = _split_host_and_port(netloc)
    if not raw_host:
        raise UnsafeUrl("the webhook URL has no host")
    if port_text:
        if not port_text.isascii() or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise UnsafeUrl(f"the webhook URL port {port_text!r} is not a number from 1 to 65535")
        port = int(port_text)
    else:
        port = DEFAULT_PORTS[parts.scheme]
    host, literal = _normalise_host(raw_host)
    path_and_query = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(scheme=parts.scheme, host=host, port=port, path_and_query=path_and_query, url=url), literal


def _split_host_and_port(netloc: str) -> tuple[str, str]:
    """Host and port text of a netloc, done by hand so that "[::1]:80" and "a:b:c" are told apart."""
    if netloc.startswith("["):
        end = netloc.find("]")
        if end == -1:
            raise UnsafeUrl("the webhook URL has an unterminated IPv6 address")
        rest = netloc[end + 1:]
        if rest and not rest.startswith(":"):
            raise UnsafeUrl("the webhook URL has text after its IPv6 address")
        return netloc[: end + 1], rest[1:]
    host, _, port_text = netloc.partition(":")
    if ":" in port_text:
        raise UnsafeUrl("IPv6 addresses in webhook URLs must be written in brackets, as in http://[::1]/")
    return host, port_text


async def default_resolver(host: str, port: int) -> list[str]:
    """The system resolver's answers for a TCP connection, IPv4 and IPv6, in its preferred order."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[str] = []
    for family, _type, _proto, _canonname, sockaddr in infos:
        address = str(sockaddr[0])
        if family in (socket.AF_INET, socket.AF_INET6) and address not in addresses:
            addresses.append(address)
    return addresses


async def check_url(
    url: str, *, allow_private: bool, resolver: Resolver = default_resolver
) -> tuple[Target, str]:
    """The parsed URL and the address to connect to; UnsafeUrl if ANY address the host resolves to is
    internal (one bad answer is enough for a later connection to land there) or if it does not resolve."""
    target, literal = _parse(url)
    if literal is not None:
        category = unsafe_address_category(literal)
        if category is not None and (not allow_private or category == METADATA):
            raise UnsafeUrl(
                f"the webhook URL points to an internal address ({category}); {ALLOW_PRIVATE_HINT}"
            )
        return target, str(literal)

    addresses = await _resolve(target, resolver)
    for address in addresses:
        category = unsafe_address_category(address)
        # Cloud metadata stays refused even with CMS_WEBHOOK_ALLOW_PRIVATE=1: no webhook targets it,
        # and on a cloud VM it hands out credentials.
        if category is not None and (not allow_private or category == METADATA):
                # Name the category, not the address: internal DNS answers are not the client's business.
                raise UnsafeUrl(
                    f"the webhook host {target.host!r} resolves to an internal address ({category}); "
                    + ALLOW_PRIVATE_HINT
                )
    return target, str(addresses[0])


async def _resolve(target: Target, resolver: Resolver) -> list[IPAddress]:
    """The host's addresses, parsed; UnsafeUrl for no answer, a timeout, or an answer that is no address."""
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_SECONDS):
            answers = await resolver(target.host, target.port)
    except TimeoutError:
        message = f"the webhook host {target.host!r} did not resolve within {RESOLVE_TIMEOUT_SECONDS:g} s"
        raise UnsafeUrl(message) from None
    except OSError:  # socket.gaierror and friends
        answers = []
    if not answers:
        raise UnsafeUrl(f"the webhook host {target.host!r} does not resolve")
    addresses: list[IPAddress] = []
    for answer in answers:
        try:
            addresses.append(ipaddress.ip_address(answer))
        except ValueError:
            message = f"the webhook host {target.host!r} resolves to something that is not an IP address"
            raise UnsafeUrl(message) from None
    return addresses
