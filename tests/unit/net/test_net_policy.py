"""The outbound policy: every spelling of an internal address, URL rules, the allowlist, resolution checks."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from service.net import (
    HostResolutionError,
    OutboundPolicy,
    OutboundRefused,
    UrlNotAllowed,
    blocked_reason,
    check_url,
    parse_ip_literal,
    resolve_checked,
)

STRICT = OutboundPolicy()
DEV = OutboundPolicy(allow_http=True)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://127.0.0.1/hook", "loopback"),
        ("https://10.0.0.1/hook", "private"),
        ("https://172.16.5.4/", "private"),
        ("https://192.168.1.1/", "private"),
        ("https://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("https://169.254.10.1/", "link-local"),
        ("https://100.100.100.200/", "cloud metadata"),
        ("https://100.64.0.1/", "carrier-grade NAT"),
        ("https://0.0.0.0/", "unspecified"),
        ("https://224.0.0.1/", "multicast"),
        ("https://240.0.0.1/", "reserved"),
        ("https://255.255.255.255/", "broadcast"),
        ("https://[::1]/hook", "loopback"),
        ("https://[::]/", "unspecified"),
        ("https://[fc00::1]/", "private"),
        ("https://[fd00:ec2::254]/", "cloud metadata"),
        ("https://[fe80::1%25eth0]/", "link-local"),
        ("https://[ff02::1]/", "multicast"),
        ("https://[::ffff:127.0.0.1]/", "IPv4-mapped loopback"),
        ("https://[::ffff:a9fe:a9fe]/", "IPv4-mapped cloud metadata"),
        ("https://[64:ff9b::a00:1]/", "NAT64 private"),
        ("https://[2002:a00:1::1]/", "6to4 private"),
        ("https://[2001::1]/", "Teredo"),
        ("https://[::127.0.0.1]/", "IPv4-compatible"),
        # inet_aton spellings of 127.0.0.1 that getaddrinfo would happily connect to.
        ("https://2130706433/", "loopback"),
        ("https://0x7f000001/", "loopback"),
        ("https://0x7f.1/", "loopback"),
        ("https://127.1/", "loopback"),
        ("https://017700000001/", "loopback"),
        ("https://0x7f.0.0.1/", "loopback"),
        ("https://0/", "unspecified"),
        ("http://2130706433/", "loopback"),
    ],
)
def test_internal_addresses_are_refused_in_every_spelling(url: str, reason: str) -> None:
    with pytest.raises(OutboundRefused, match=reason):
        check_url(url, DEV)


def test_octal_dotted_quad_is_refused() -> None:
    # httpx rejects this spelling as a URL, which refuses it just as well (and it never reaches getaddrinfo).
    with pytest.raises(UrlNotAllowed):
        check_url("https://0177.0.0.1/", DEV)


@pytest.mark.parametrize(
    "host",
    ["2130706433", "0x7f000001", "0x7f.1", "127.1", "127.0.1", "0177.0.0.1", "017700000001", "1.0x10", "0", "8.8.8.8"],
)
def test_inet_aton_forms_parse_like_the_c_library(host: str) -> None:
    assert parse_ip_literal(host) == ipaddress.IPv4Address(socket.inet_aton(host))


@pytest.mark.parametrize("host", ["256.1.1.1", "1.2.3.4.5", "0x100.1", "08", "1..2", "0x", "example.com", "1.2.3.", ""])
def test_non_addresses_are_not_parsed_as_ipv4(host: str) -> None:
    assert parse_ip_literal(host) is None


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1"],
)
def test_public_addresses_pass(address: str) -> None:
    assert blocked_reason(ipaddress.ip_address(address)) is None
    assert check_url(f"https://[{address}]/" if ":" in address else f"https://{address}/", STRICT).ip is not None


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://example.com/hook", "must use https"),
        ("ftp://example.com/hook", "scheme must be https"),
        ("file:///etc/passwd", "scheme must be https"),
        ("javascript:alert(1)", "scheme must be https"),
        ("https://user:pw@example.com/", "credentials"),
        ("https://token@example.com/", "credentials"),
        ("https://example.com:99999/", "port 99999"),
        ("https:///path", "no host"),
        ("", "empty"),
        ("https://example.com/" + "a" * 2000, "longer than"),
        ("https://example.com/a b", "whitespace"),
        ("https://exa\nmple.com/", "whitespace"),
        ("https://localhost/hook", "loopback name"),
        ("https://api.LOCALHOST./hook", "loopback name"),
    ],
)
def test_url_policy_errors_name_the_rule(url: str, message: str) -> None:
    with pytest.raises(UrlNotAllowed, match=message):
        check_url(url, STRICT)


def test_check_url_normalises_and_reports_the_target() -> None:
    target = check_url("https://Hooks.Example.COM/path?q=1", STRICT)
    assert target.url == "https://hooks.example.com/path?q=1"
    assert (target.scheme, target.host, target.port, target.ip) == ("https", "hooks.example.com", 443, None)
    assert check_url("http://example.com:8080/", DEV).port == 8080
    idn = check_url("https://bücher.example/", STRICT)
    assert idn.host == "xn--bcher-kva.example"


def test_allowlist_opens_only_what_it_names() -> None:
    policy = OutboundPolicy.from_allowlist(
        ["127.0.0.0/8", "::1", "hooks.internal", "*.svc.cluster.local", " "], allow_http=True
    )
    assert check_url("http://127.0.0.1:8080/hook", policy).ip == ipaddress.IPv4Address("127.0.0.1")
    assert check_url("http://[::1]:8080/hook", policy).port == 8080
    assert check_url("http://2130706433/", policy).ip == ipaddress.IPv4Address("127.0.0.1")
    assert check_url("http://[::ffff:127.0.0.1]/", policy).ip is not None  # the embedded address is allowlisted
    with pytest.raises(OutboundRefused, match="private"):
        check_url("http://10.0.0.1/", policy)
    with pytest.raises(OutboundRefused, match="metadata"):
        check_url("http://169.254.169.254/", policy)

    assert policy.host_allowed("HOOKS.internal.")
    assert policy.host_allowed("a.b.svc.cluster.local")
    assert not policy.host_allowed("svc.cluster.local")
    assert not policy.host_allowed("evil-hooks.internal")


@pytest.mark.parametrize("entry", ["not a host!", "10.0.0.0/33", "*.", "-bad.example"])
def test_malformed_allowlist_entries_are_rejected(entry: str) -> None:
    with pytest.raises(ValueError, match="allowlist entry"):
        OutboundPolicy.from_allowlist([entry])


def test_hostname_resolving_to_a_private_address_is_refused(make_resolver) -> None:
    resolver = make_resolver({"hooks.example.com": ["10.0.0.5"]})
    check_url("https://hooks.example.com/", STRICT)  # nothing wrong with the URL itself
    with pytest.raises(OutboundRefused, match=r"private address 10\.0\.0\.5 \(resolved from hooks.example.com\)"):
        resolve_checked("hooks.example.com", 443, STRICT, resolver)


def test_one_internal_record_among_public_ones_refuses_the_name(make_resolver) -> None:
    resolver = make_resolver({"mixed.example.com": ["93.184.216.34", "2606:2800:220:1::1", "127.0.0.1"]})
    with pytest.raises(OutboundRefused, match="loopback"):
        resolve_checked("mixed.example.com", 443, STRICT, resolver)


def test_resolved_addresses_are_returned_for_connecting(make_resolver) -> None:
    resolver = make_resolver({"public.example.com": ["93.184.216.34", "2606:2800:220:1::1"]})
    assert [str(a) for a in resolve_checked("public.example.com", 443, STRICT, resolver)] == [
        "93.184.216.34",
        "2606:2800:220:1::1",
    ]


def test_literal_hosts_are_checked_without_dns(make_resolver) -> None:
    calls: list[str] = []
    resolver = make_resolver({}, calls)
    with pytest.raises(OutboundRefused, match="loopback"):
        resolve_checked("0x7f.1", 443, STRICT, resolver)
    assert resolve_checked("8.8.8.8", 443, STRICT, resolver) == [ipaddress.IPv4Address("8.8.8.8")]
    assert calls == []


def test_allowlisted_host_name_may_resolve_internally(make_resolver) -> None:
    policy = OutboundPolicy.from_allowlist(["hooks.internal"])
    resolver = make_resolver({"hooks.internal": ["10.1.2.3"]})
    assert resolve_checked("hooks.internal", 443, policy, resolver) == [ipaddress.IPv4Address("10.1.2.3")]


def test_resolution_failures_are_reported_as_such(make_resolver) -> None:
    with pytest.raises(HostResolutionError, match=r"could not resolve nowhere\.example"):
        resolve_checked("nowhere.example", 443, STRICT, make_resolver({}))
    with pytest.raises(HostResolutionError, match="no addresses"):
        resolve_checked("empty.example", 443, STRICT, make_resolver({"empty.example": []}))


def test_system_resolver_result_is_checked() -> None:
    # "localhost" resolves through the real getaddrinfo (hosts file) to loopback.
    with pytest.raises(OutboundRefused, match="loopback"):
        resolve_checked("localhost", 443, STRICT)
