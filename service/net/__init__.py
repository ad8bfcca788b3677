"""The one outbound network layer: every URL a user gives us (webhooks, evaluation endpoints, LLM judges, provider
base URLs) is checked against one policy when it is given (``check_url``) and dialled only through these clients,
which check the resolved address at every connection and connect to the address they checked.

Loopback, private, link-local, cloud metadata, unique-local, IPv4-mapped/translated, NAT64 and 6to4 forms of them
are refused, in every spelling a URL can carry. ``FINETUNE_OUTBOUND_ALLOWLIST`` opens chosen internal targets.
"""

from service.net.addresses import blocked_reason, parse_ip_literal
from service.net.clients import DEFAULT_MAX_RESPONSE_BYTES, async_client, sync_client
from service.net.errors import HostResolutionError, OutboundRefused, ResponseTooLarge, UrlNotAllowed, is_refusal
from service.net.policy import OutboundPolicy, Target, allowed_url, check_url, outbound_policy
from service.net.resolve import Resolver, resolve_checked
from service.net.transport import AsyncGuardedTransport, GuardedTransport

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "AsyncGuardedTransport",
    "GuardedTransport",
    "HostResolutionError",
    "OutboundPolicy",
    "OutboundRefused",
    "Resolver",
    "ResponseTooLarge",
    "Target",
    "UrlNotAllowed",
    "allowed_url",
    "async_client",
    "blocked_reason",
    "check_url",
    "is_refusal",
    "outbound_policy",
    "parse_ip_literal",
    "resolve_checked",
    "sync_client",
]
