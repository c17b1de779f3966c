"""Customer-chosen storage endpoints (s3-generic): what keeps them off private networks.

- `EndpointCheckedStore`: obstore is Rust and resolves names itself, with no hook between
  resolution and connect, so this wrapper resolves the endpoint's host right before every
  operation that connects and refuses it when an address is not public (the same rule as
  webhooks: outbound/transport.py::checked_addresses). A window remains between our lookup and
  obstore's own; docs/security.md says what bounds it. Signing a URL connects nowhere and is
  not checked (unless the store says it does: an assumed role may need a session from the
  endpoint's STS).
- `without_cross_host_redirects`: obstore's HTTP client follows redirects, so an endpoint could
  send callvault (with the method and body of a PUT or DELETE) to any address. obstore has no
  redirect setting, but it has a proxy setting with exclusions: every host but the endpoint's
  own goes to a proxy that cannot be reached (port 0 never accepts), so such a request fails
  at once. Redirects within the endpoint's host still work.
- `egress_proxy_for`: the egress guard every connection of a customer's store goes through
  (outbound/egress.py), trusting the endpoints the operator configured (storage/settings.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpcore

from callvault.outbound.egress import proxy_url_for
from callvault.outbound.transport import (
    PolicyRefusal,
    Resolver,
    checked_addresses,
    system_resolver,
)
from callvault.storage import settings as storage_settings
from callvault.storage.base import ObjectInfo, ObjectStore, StorageError, StorageErrorKind

if TYPE_CHECKING:
    from obstore.store import ClientConfig

# nothing can listen on port 0: a connection to this "proxy" is refused immediately
UNREACHABLE_PROXY = "http://127.0.0.1:0"


def without_cross_host_redirects(options: ClientConfig, endpoint: str) -> ClientConfig:
    """`options` plus a proxy that refuses every host except the endpoint's own."""
    host = urlsplit(endpoint).hostname or ""
    # an explicit proxy also switches off proxies from the environment (HTTP_PROXY and co.)
    return {**options, "proxy_url": UNREACHABLE_PROXY, "proxy_excludes": host}


class EndpointCheckedStore(ObjectStore):
    """Delegates to `inner`; checks the endpoint's addresses before put, head, get, delete."""

    def __init__(
        self, inner: ObjectStore, endpoint: str, *, resolver: Resolver = system_resolver
    ) -> None:
        self.inner = inner
        self.backend = inner.backend
        self.bucket = inner.bucket
        self.checks_uploads = inner.checks_uploads
        self.noun = str(getattr(inner, "noun", "bucket"))
        parts = urlsplit(endpoint)
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._resolver = resolver

    async def check(self) -> None:
        try:
            await checked_addresses(
                self._host, self._port, allow_private=False, resolver=self._resolver
            )
        except PolicyRefusal:
            # permanent: the worker keeps the recording in the default store and tells the
            # customer, instead of retrying against an address it must never reach
            raise StorageError.build(
                StorageErrorKind.PERMANENT_AUTH,
                self.backend,
                self.bucket,
                f"endpoint refused — {self._host} resolves to a private, loopback or otherwise "
                "non-public address",
            ) from None
        except httpcore.ConnectError:
            raise StorageError.build(
                StorageErrorKind.TRANSIENT,
                self.backend,
                self.bucket,
                f"endpoint {self._host} does not resolve",
            ) from None

    async def put_file(
        self, key: str, source: Path | bytes, *, content_type: str, metadata: Mapping[str, str]
    ) -> None:
        await self.check()
        await self.inner.put_file(key, source, content_type=content_type, metadata=metadata)

    async def head(self, key: str) -> ObjectInfo | None:
        await self.check()
        return await self.inner.head(key)

    async def get_stream(self, key: str) -> AsyncIterator[bytes]:
        await self.check()
        async for chunk in self.inner.get_stream(key):
            yield chunk

    async def delete(self, key: str) -> None:
        await self.check()
        await self.inner.delete(key)

    async def signed_get_url(self, key: str, expires_in: int) -> str:
        if getattr(self.inner, "connects_to_sign", False):
            # e.g. an assumed role: signing may first ask the endpoint's STS for a session
            await self.check()
        return await self.inner.signed_get_url(key, expires_in)

    def canonical_url(self, key: str) -> str:
        return self.inner.canonical_url(key)


def egress_proxy_for(allow_private_networks: bool) -> str | None:
    """The egress guard's URL for a customer store's clients, the operator's endpoints trusted;
    None when private networks are allowed (then no guard is needed)."""
    if allow_private_networks:
        return None
    return proxy_url_for(False, storage_settings.current().operator_endpoints())
