"""Webhook URL checks: syntax, every internal address category, odd IPv4 spellings, DNS answers."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import pytest

from cms.app.webhooks import ssrf
from cms.app.webhooks.ssrf import (
    Target,
    UnsafeUrl,
    check_url,
    default_resolver,
    is_unsafe_address,
    parse_ipv4_host,
    parse_target,
    unsafe_address_category,
)

PUBLIC_V4 = "93.184.216.34"
PUBLIC_V6 = "2606:2800:220:1::"


class FakeDns:
    """A dict-backed resolver whose answers a test can change between checks (DNS rebinding)."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.queries: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.queries.append((host, port))
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return list(self.answers[host])


UNSAFE_ADDRESSES = {
    "loopback": ["127.0.0.1", "127.255.255.254", "::1"],
    "private": ["10.0.0.1", "172.16.0.1", "172.31.255.255", "192.168.1.1", "fc00::1", "fd12:3456::1"],
    "link-local": ["169.254.1.1", "fe80::1", "fe80::1%eth0", "febf::1"],
    "carrier-grade NAT": ["100.64.0.1", "100.127.255.254"],
    "multicast": ["224.0.0.1", "239.255.255.250", "ff02::1", "ff0e::1"],
    "unspecified": ["0.0.0.0", "0.1.2.3", "::"],
    "reserved and broadcast": [
        "240.0.0.1", "255.255.255.255", "192.0.2.1", "198.18.0.1", "203.0.113.9", "2001:db8::1", "100::1"
    ],
    "cloud metadata": ["169.254.169.254", "fd00:ec2::254", "100.100.100.200", "192.0.0.192", "168.63.129.16"],
    "IPv4-mapped": ["::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "::ffff:0.0.0.0"],
    "IPv4-compatible": ["::127.0.0.1", "::10.0.0.1", "::" + PUBLIC_V4],
    "NAT64": ["64:ff9b::7f00:1", "64:ff9b::10.0.0.1", "64:ff9b::169.254.169.254", "64:ff9b:1::1"],
    "6to4": ["2002:7f00:1::", "2002:a00:1::1", "2002:a9fe:a9fe::"],
    "Teredo and site-local": ["2001::1", "fec0::1"],
    "outside global unicast": ["4000::1", "e000::1"],
}

PUBLIC_ADDRESSES = [
    PUBLIC_V4, PUBLIC_V6, "8.8.8.8", "1.1.1.1", "2001:4860:4860::8888", "::ffff:" + PUBLIC_V4,
    "64:ff9b::" + PUBLIC_V4, "2002:5db8:d822::1", "100.63.255.255", "100.128.0.1", "172.32.0.1",
]


# ---------------------------------------------------------------------------------------------
# is_unsafe_address


@pytest.mark.parametrize(
    "address",
    [pytest.param(address, id=f"{category}:{address}")
     for category, addresses in UNSAFE_ADDRESSES.items() for address in addresses],
)
def test_internal_addresses_are_unsafe(address: str) -> None:
    assert is_unsafe_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", PUBLIC_ADDRESSES)
def test_public_addresses_are_safe(address: str) -> None:
    assert not is_unsafe_address(ipaddress.ip_address(address))
    assert unsafe_address_category(ipaddress.ip_address(address)) is None


def test_categories_name_the_reason() -> None:
    def category(text: str) -> str | None:
        return unsafe_address_category(ipaddress.ip_address(text))

    assert category("169.254.169.254") == category("fd00:ec2::254") == "cloud metadata"
    assert category("127.0.0.1") == category("::1") == category("::ffff:127.0.0.1") == "loopback"
    assert category("10.1.2.3") == "private" and category("169.254.0.9") == "link-local"


# ---------------------------------------------------------------------------------------------
# parse_target: syntax only


def test_parse_target_splits_the_url() -> None:
    url = "HTTPS://Hooks.Example.COM:8443/in/coming?x=1&y=2#fragment"
    assert parse_target(url) == Target("https", "hooks.example.com", 8443, "/in/coming?x=1&y=2", url)
    assert parse_target("http://example.com") == Target("http", "example.com", 80, "/", "http://example.com")
    assert parse_target("https://example.com:/").port == 443
    assert parse_target("http://[2606:2800:220:1::]:8080/").host == PUBLIC_V6


def test_host_header_brackets_ipv6_and_omits_default_ports() -> None:
    assert parse_target("https://example.com/").host_header == "example.com"
    assert parse_target("https://example.com:8443/").host_header == "example.com:8443"
    assert parse_target("http://[2606:2800:220:1::]:8080/").host_header == f"[{PUBLIC_V6}]:8080"


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/", "file:///etc/passwd", "javascript:alert(1)", "gopher://example.com/",
     "//example.com/x",
     "example.com/hook", "data:text/plain,hi", "ws://example.com/", ""],
)
def test_only_http_and_https(url: str) -> None:
    with pytest.raises(UnsafeUrl, match="http"):
        parse_target(url)


@pytest.mark.parametrize(
    "url", ["http://user:pass@example.com/", "http://user@example.com/", "https://:secret@example.com/",
            "http://example.com@127.0.0.1/", "http://example.com%40evil@example.com/"],
)
def test_userinfo_is_refused(url: str) -> None:
    with pytest.raises(UnsafeUrl, match="user"):
        parse_target(url)


@pytest.mark.parametrize(
    "url", ["http:///hook", "http://", "https://:443/", "http:example.com", "http:/example.com/"]
)
def test_a_host_is_required(url: str) -> None:
    with pytest.raises(UnsafeUrl, match="no host"):
        parse_target(url)


@pytest.mark.parametrize("port", ["0", "65536", "99999", "-1", "8o", "+80", "٨٠"])
def test_ports_must_be_1_to_65535(port: str) -> None:
    with pytest.raises(UnsafeUrl):
        parse_target(f"http://example.com:{port}/")


def test_extreme_ports_are_fine() -> None:
    assert parse_target("http://example.com:1/").port == 1
    assert parse_target("http://example.com:65535/").port == 65535


def test_long_urls_are_refused() -> None:
    base = "https://example.com/"
    assert parse_target(base + "a" * (2048 - len(base))).url.endswith("a")
    with pytest.raises(UnsafeUrl, match="2048"):
        parse_target(base + "a" * (2049 - len(base)))


@pytest.mark.parametrize(
    "url",
    ["http://exa mple.com/", "http://example.com/\r\nX-Injected: 1", "http://example.com\\@127.0.0.1/",
     "http://127.0.0.1\\.example.com/", "http://%31%32%37.0.0.1/", "http://exam_ple..com/", "http://-bad.com/",
     "http://[::1/", "http://[::1]x/", "http://::1/", "http://[fe80::1%25eth0]/", "http://[not-ipv6]/",
     "http://" + "a" * 64 + ".com/", "http://1.2.3.256/", "http://1.2.3.4.5/", "http://0x100.0.0.1/",
     "http://foo.123/", "http://09.0.0.1/", "http://\u00a0example.com/"],
)
def test_malformed_hosts_are_refused(url: str) -> None:
    with pytest.raises(UnsafeUrl):
        parse_target(url)


def test_idna_hosts_are_encoded() -> None:
    assert parse_target("https://Bücher.Example/hook").host == "xn--bcher-kva.example"
    assert parse_target("https://例え.テスト/").host == "xn--r8jz45g.xn--zckzah"


@pytest.mark.parametrize(
    ("host", "expected"),
    [("2130706433", "127.0.0.1"), ("0x7f.1", "127.0.0.1"), ("0177.0.0.1", "127.0.0.1"),
     ("127.1", "127.0.0.1"),
     ("0x7F000001", "127.0.0.1"), ("017700000001", "127.0.0.1"), ("127.0.1", "127.0.0.1"), ("0", "0.0.0.0"),
     ("0x0a.0.0.1", "10.0.0.1"), ("169.254.43518", "169.254.169.254"), ("0xa9fea9fe", "169.254.169.254"),
     ("127.0.0.1.", "127.0.0.1"), ("93.184.216.34", PUBLIC_V4), ("1.0x2.03.4", "1.2.3.4"), ("0x", "0.0.0.0")],
)
def test_ipv4_spellings_mean_the_address_they_spell(host: str, expected: str) -> None:
    assert parse_ipv4_host(host) == ipaddress.IPv4Address(expected)
    assert parse_target(f"http://{host}/").host == expected


@pytest.mark.parametrize("host", ["example.com", "localhost", "123abc.example", "1e3.example", "0x7g.com"])
def test_names_are_not_ipv4(host: str) -> None:
    assert parse_ipv4_host(host) is None


def test_wide_digits_and_ideographic_dots_are_ipv4_too() -> None:
    assert parse_target("http://１２７。０。０。１/").host == "127.0.0.1"


# ---------------------------------------------------------------------------------------------
# check_url


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1/", "http://localhost.:80/", "http://[::1]/", "http://10.0.0.5:8080/", "http://192.168.0.1/",
     "http://172.20.1.1/", "http://[fd00::1]/", "http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/",
     "http://100.100.100.200/", "http://192.0.0.192/", "http://100.64.1.1/", "http://[fe80::1]/", "http://0.0.0.0/",
     "http://[::]/", "http://224.0.0.1/", "http://[ff02::1]/", "http://255.255.255.255/", "http://[::ffff:127.0.0.1]/",
     "http://[::ffff:7f00:1]/", "http://[64:ff9b::127.0.0.1]/", "http://[::127.0.0.1]/", "http://2130706433/",
     "http://0x7f.1/", "http://0177.0.0.1/", "http://127.1/", "http://0/", "http://0xa9fea9fe/",
     "http://[::ffff:169.254.169.254]/"],
)
async def test_internal_urls_are_refused(url: str) -> None:
    dns = FakeDns({"localhost.": ["127.0.0.1"]})
    with pytest.raises(UnsafeUrl, match="internal address"):
        await check_url(url, allow_private=False, resolver=dns)


async def test_ip_literals_are_not_resolved() -> None:
    dns = FakeDns({})
    for url in ["http://0x7f.1/", f"http://{PUBLIC_V4}/", f"http://[{PUBLIC_V6}]/"]:
        try:
            await check_url(url, allow_private=False, resolver=dns)
        except UnsafeUrl:
            pass
    assert dns.queries == []


@pytest.mark.parametrize(
    ("url", "address"),
    [(f"http://{PUBLIC_V4}/", PUBLIC_V4), (f"https://[{PUBLIC_V6}]:8443/", PUBLIC_V6),
     ("http://1572395042/", PUBLIC_V4), ("http://[::ffff:93.184.216.34]/", "::ffff:5db8:d822")],
)
async def test_public_literals_pass_unresolved(url: str, address: str) -> None:
    target, connect_to = await check_url(url, allow_private=False, resolver=FakeDns({}))
    assert connect_to == address and target.url == url


async def test_a_public_name_passes_and_gives_the_address_to_pin() -> None:
    dns = FakeDns({"hooks.example.com": [PUBLIC_V4, PUBLIC_V6]})
    target, address = await check_url("https://hooks.example.com/in", allow_private=False, resolver=dns)
    assert (target.host, target.port, address) == ("hooks.example.com", 443, PUBLIC_V4)
    assert dns.queries == [("hooks.example.com", 443)]


async def test_a_name_with_any_internal_answer_is_refused() -> None:
    dns = FakeDns({"mixed.example.com": [PUBLIC_V4, PUBLIC_V6, "10.0.0.7"]})
    with pytest.raises(UnsafeUrl, match="internal address") as raised:
        await check_url("https://mixed.example.com/", allow_private=False, resolver=dns)
    assert "10.0.0.7" not in str(raised.value)  # internal DNS answers are not shown to the client


async def test_answers_are_checked_each_time() -> None:
    dns = FakeDns({"rebind.example.com": [PUBLIC_V4]})
    assert (await check_url("http://rebind.example.com/", allow_private=False, resolver=dns))[1] == PUBLIC_V4
    dns.answers["rebind.example.com"] = ["169.254.169.254"]
    with pytest.raises(UnsafeUrl, match="cloud metadata"):
        await check_url("http://rebind.example.com/", allow_private=False, resolver=dns)


@pytest.mark.parametrize("answers", [None, []])
async def test_a_name_that_does_not_resolve_is_refused(answers: list[str] | None) -> None:
    dns = FakeDns({} if answers is None else {"nowhere.example": answers})
    for allow_private in (False, True):
        with pytest.raises(UnsafeUrl, match="does not resolve"):
            await check_url("https://nowhere.example/", allow_private=allow_private, resolver=dns)


async def test_a_resolver_answer_that_is_no_address_is_refused() -> None:
    with pytest.raises(UnsafeUrl, match="not an IP address"):
        await check_url("https://odd.example/", allow_private=False, resolver=FakeDns({"odd.example": ["x"]}))


async def test_slow_resolution_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ssrf, "RESOLVE_TIMEOUT_SECONDS", 0.05)

    async def hanging(host: str, port: int) -> list[str]:
        await asyncio.sleep(10)
        return [PUBLIC_V4]

    with pytest.raises(UnsafeUrl, match="did not resolve within"):
        await check_url("https://slow.example/", allow_private=False, resolver=hanging)


def test_the_default_timeout_is_five_seconds() -> None:
    assert ssrf.RESOLVE_TIMEOUT_SECONDS == 5


async def test_idna_names_are_resolved_in_ascii() -> None:
    dns = FakeDns({"xn--bcher-kva.example": [PUBLIC_V4]})
    target, address = await check_url("https://bücher.example/", allow_private=False, resolver=dns)
    assert (target.host, address) == ("xn--bcher-kva.example", PUBLIC_V4)
    dns.answers["xn--bcher-kva.example"] = ["::1"]
    with pytest.raises(UnsafeUrl):
        await check_url("https://BÜCHER.example/", allow_private=False, resolver=dns)


async def test_allow_private_lifts_the_address_check_only() -> None:
    dns = FakeDns({"intranet.local": ["10.0.0.7", PUBLIC_V4], "localhost": ["::1", "127.0.0.1"]})
    assert (await check_url("http://127.0.0.1:8080/", allow_private=True, resolver=dns))[1] == "127.0.0.1"
    assert (await check_url("http://0x7f.1/", allow_private=True, resolver=dns))[1] == "127.0.0.1"
    assert (await check_url("http://[::1]/", allow_private=True, resolver=dns))[1] == "::1"
    assert (await check_url("http://intranet.local/", allow_private=True, resolver=dns))[1] == "10.0.0.7"
    assert (await check_url("http://localhost/", allow_private=True, resolver=dns))[1] == "::1"
    for url in ["ftp://127.0.0.1/", "http://user:pw@127.0.0.1/", "http:///x", "http://127.0.0.1:0/"]:
        with pytest.raises(UnsafeUrl):
            await check_url(url, allow_private=True, resolver=dns)


def test_unsafe_url_is_a_value_error_with_a_readable_message() -> None:
    assert issubclass(UnsafeUrl, ValueError)
    with pytest.raises(UnsafeUrl) as raised:
        parse_target("ftp://example.com/")
    assert str(raised.value) == "the webhook URL must start with http:// or https://"


async def test_the_default_resolver_returns_address_strings() -> None:
    assert await default_resolver("127.0.0.1", 80) == ["127.0.0.1"]


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/", "http://metadata.test/"])
async def test_cloud_metadata_is_refused_even_when_private_addresses_are_allowed(url: str) -> None:
    async def resolver(host: str, port: int) -> list[str]:
        return ["169.254.169.254"]

    with pytest.raises(UnsafeUrl, match="cloud metadata"):
        await check_url(url, allow_private=True, resolver=resolver)


async def test_a_receivers_cookies_are_never_kept() -> None:
    """A receiver's Set-Cookie must not come back on the next request (nor reach another endpoint)."""
    from http.server import BaseHTTPRequestHandler

    from cms.app.webhooks.sending import WebhookSender
    from cms.app.webhooks.signing import SecretBox
    from tests.support import LocalServer

    seen: list[str | None] = []

    class SetsCookies(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen.append(self.headers.get("Cookie"))
            self.send_response(200)
            self.send_header("Set-Cookie", "session=abc; Path=/")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = LocalServer(SetsCookies).start()
    sender = WebhookSender(None, SecretBox(b"k" * 32), schedule=(1.0,), allow_private=True)
    try:
        port = int(server.url.rsplit(":", 1)[1].split("/")[0])
        for _ in range(2):
            answer = await sender.http.post("http", "127.0.0.1", port, "127.0.0.1", f"127.0.0.1:{port}", "/hook", [], b"{}")
            assert answer.status == 200
        assert seen == [None, None]
    finally:
        await sender.close()
        server.stop()
