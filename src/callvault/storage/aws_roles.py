"""Keyless access to a customer's S3 bucket: callvault assumes the customer's IAM role.

Part of the s3 provider (s3.py uses it for `s3` and `s3-generic` configurations that give
`role_arn`). What it does:

- `AssumeRole` with callvault's own AWS identity — the standard credential chain of this
  process (AWS_ACCESS_KEY_ID/…, a profile, an instance or pod role), through botocore, since
  obstore has no STS client. `ExternalId` is the value callvault generated for the connection
  (never the customer's choice: the "confused deputy" guard), `RoleSessionName` names the
  connection, so the customer's CloudTrail shows which connection wrote.
- The STS endpoint: `AWS_ENDPOINT_URL_STS` when set, else AWS's regional one (`s3`) or the
  configured endpoint (`s3-generic`: S3-compatible stores that have STS serve it there) — but
  only an endpoint the operator allows in `CALLVAULT_STS_ENDPOINTS`: an AssumeRole request is
  signed with callvault's own AWS identity, and a customer's host must never see it (its access
  key id names the operator's account, and the signed request could be replayed to real STS).
  The STS client ignores proxies from the environment and connects through the egress guard.
- Sessions last `SESSION_SECONDS` and are cached per process (never stored anywhere), keyed by
  (endpoint, role, external id, session name); a session is renewed once less than
  `REFRESH_BEFORE_SECONDS` remain, so a download link signed with it (600 s) never outlives it.
  obstore is handed a credential provider that reads this cache and reports the session's
  expiry, so obstore asks again by itself before the session ends.
- Refusals say what to check: AssumeRole's AccessDenied names the role, the principal that must
  be trusted and the ExternalId condition.
- The setup helper for customers: callvault's principal (CALLVAULT_AWS_PRINCIPAL_ARN, else STS
  GetCallerIdentity), the trust policy and the least-privilege bucket policy, as documents.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from callvault.moments import as_utc
from callvault.storage import settings as storage_settings
from callvault.storage.base import StorageErrorKind
from callvault.storage.error_mapping import AUTH, TRANSIENT
from callvault.storage.settings import STS_ENDPOINTS_ENV

if TYPE_CHECKING:
    from obstore.store import S3Credential

# botocore logs request and response bodies at DEBUG: an AssumeRole answer holds the session's
# secret key and token, which must never reach a log, whatever level the operator chooses
for _name in ("botocore", "boto3"):
    logging.getLogger(_name).setLevel(logging.WARNING)

STS_ENDPOINT_ENV = "AWS_ENDPOINT_URL_STS"
SESSION_SECONDS = 3600  # AWS's default MaxSessionDuration of a role: always allowed
REFRESH_BEFORE_SECONDS = 15 * 60  # > the 600 s of a signed download link
MIN_SESSION_SECONDS = 15 * 60

# AWS: arn:aws:iam::123456789012:role/NAME (optionally with a path); SeaweedFS names its roles
# arn:aws:iam::role/NAME (no account)
ROLE_ARN = re.compile(
    r"^arn:aws(?:-cn|-us-gov)?:iam::(?:\d{12}:)?role/(?:[\w+=,.@-]+/)*[\w+=,.@-]{1,64}$"
)
ROLE_ARN_PATTERN = ROLE_ARN.pattern

# STS error codes -> (kind, what the customer should check)
_STS_CODES: dict[str, tuple[StorageErrorKind, str]] = {
    "AccessDenied": (
        AUTH,
        "check that the role exists, that its trust policy allows {principal} to call "
        "sts:AssumeRole and that its sts:ExternalId condition is {external_id}",
    ),
    "InvalidClientTokenId": (
        AUTH,
        "callvault's own AWS credentials are not valid (operator: check this process's AWS "
        "credentials)",
    ),
    "SignatureDoesNotMatch": (
        AUTH,
        "callvault's own AWS credentials are not valid (operator: check this process's AWS "
        "credentials)",
    ),
    "ExpiredToken": (AUTH, "callvault's own AWS session has expired (operator)"),
    "RegionDisabledException": (AUTH, "STS is not activated in this region for the account"),
    "MalformedPolicyDocument": (AUTH, "the role's policy is malformed"),
    "ValidationError": (AUTH, "STS refused the request (check the role ARN)"),
    "Throttling": (TRANSIENT, "STS asks to slow down"),
    "ServiceUnavailable": (TRANSIENT, "STS is unavailable"),
    "InternalFailure": (TRANSIENT, "STS had an internal error"),
}


class RoleError(Exception):
    """AssumeRole failed: `kind` and a reason that names the role and what to check."""

    def __init__(self, kind: StorageErrorKind, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


@dataclass(frozen=True)
class Session:
    access_key_id: str
    secret_access_key: str
    token: str
    expires_at: datetime

    def fresh(self, now: datetime, margin: float = REFRESH_BEFORE_SECONDS) -> bool:
        return self.expires_at - timedelta(seconds=margin) > now

    def as_obstore(self) -> S3Credential:
        return {
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
            "token": self.token,
            "expires_at": self.expires_at,
        }


@dataclass(frozen=True)
class RoleTarget:
    """Which role to assume, how, and through which STS endpoint."""

    role_arn: str
    external_id: str
    session_name: str
    sts_endpoint: str | None  # None: AWS's own for the region
    region: str
    # the egress guard STS requests go through (None: private networks allowed, no proxy)
    egress_proxy: str | None = None


def sts_endpoint(*, generic_endpoint: str | None, region: str) -> str | None:
    """AWS_ENDPOINT_URL_STS, else the s3-generic endpoint when the operator allows it (None when
    not: the configuration cannot assume a role), else AWS's regional STS endpoint."""
    override = os.environ.get(STS_ENDPOINT_ENV)
    if generic_endpoint and not override:
        endpoint = generic_endpoint.rstrip("/")
        allowed = storage_settings.current().sts_endpoints  # CALLVAULT_STS_ENDPOINTS
        return endpoint if endpoint in allowed else None
    return aws_sts_endpoint(region)


def aws_sts_endpoint(region: str) -> str:
    """AWS_ENDPOINT_URL_STS, else AWS's regional STS endpoint."""
    override = os.environ.get(STS_ENDPOINT_ENV)
    if override:
        return override.rstrip("/")
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"https://sts.{region}.{suffix}"


def sts_refusal(endpoint: str) -> str:
    """Why an s3-generic `role_arn` cannot be used with `endpoint`."""
    return (
        f"role_arn needs an STS endpoint this server allows: {endpoint} is not one of them "
        f"(operator: add it to {STS_ENDPOINTS_ENV} if its STS may be called with this server's "
        "own AWS identity)"
    )


def session_name_for(connection_id: str) -> str:
    """RoleSessionName naming the connection: 2-64 of [\\w+=,.@-]."""
    cleaned = re.sub(r"[^\w+=,.@-]", "-", connection_id)
    return f"callvault-{cleaned}"[:64]


class RoleSessions:
    """Per-process cache of assumed-role sessions; thread-safe (obstore calls from its own
    threads). Never persisted."""

    def __init__(self, *, session_seconds: int = SESSION_SECONDS) -> None:
        self.session_seconds = session_seconds
        self._sessions: dict[RoleTarget, Session] = {}
        self._lock = threading.Lock()
        self._clients: dict[tuple[str, str, str | None], Any] = {}
        self.assumed = 0  # how many AssumeRole calls succeeded (tests and metrics)

    def get(self, target: RoleTarget) -> Session:
        """A session with more than REFRESH_BEFORE_SECONDS left: cached or newly assumed.
        Raises RoleError."""
        now = datetime.now(UTC)
        with self._lock:
            cached = self._sessions.get(target)
            if cached is not None and cached.fresh(now, self._margin()):
                return cached
        session = self._assume(target)
        with self._lock:
            self._sessions[target] = session
        return session

    def forget(self, target: RoleTarget) -> None:
        """Drop a cached session (the storage said it expired or is invalid)."""
        with self._lock:
            self._sessions.pop(target, None)

    def cached(self, target: RoleTarget) -> Session | None:
        with self._lock:
            return self._sessions.get(target)

    def put(self, target: RoleTarget, session: Session) -> None:
        """Replace the cached session (tests simulate a session that ended early)."""
        with self._lock:
            self._sessions[target] = session

    def provider(self, target: RoleTarget) -> Any:
        """A credential provider for obstore's S3Store: the cached session and its expiry."""

        def provide() -> S3Credential:
            return self.get(target).as_obstore()

        return provide

    def _margin(self) -> float:
        # a session shorter than twice the margin would be renewed at once: keep half of it
        return min(REFRESH_BEFORE_SECONDS, self.session_seconds / 2)

    def _client(self, endpoint: str, region: str, egress_proxy: str | None = None) -> Any:
        with self._lock:
            client = self._clients.get((endpoint, region, egress_proxy))
            if client is None:
                client = sts_client(endpoint, region, egress_proxy)
                self._clients[(endpoint, region, egress_proxy)] = client
            return client

    def _assume(self, target: RoleTarget) -> Session:
        endpoint = target.sts_endpoint or aws_sts_endpoint(target.region)
        try:
            client = self._client(endpoint, target.region, target.egress_proxy)
            answer = client.assume_role(
                RoleArn=target.role_arn,
                RoleSessionName=target.session_name,
                ExternalId=target.external_id,
                DurationSeconds=self.session_seconds,
            )
        except Exception as exc:
            raise role_error(exc, target) from None
        credentials = answer["Credentials"]
        expiration = credentials["Expiration"]
        if not isinstance(expiration, datetime):
            expiration = datetime.now(UTC) + timedelta(seconds=self.session_seconds)
        # obstore accepts only datetime.UTC as the zone (botocore answers its own tzutc)
        expiration = as_utc(expiration)
        self.assumed += 1
        return Session(
            access_key_id=credentials["AccessKeyId"],
            secret_access_key=credentials["SecretAccessKey"],
            token=credentials["SessionToken"],
            expires_at=expiration,
        )


def sts_client(endpoint: str, region: str, egress_proxy: str | None) -> Any:
    """A boto3 STS client for `endpoint` that never takes a proxy from the environment: the
    egress guard when given, else none (an explicit mapping, even empty, replaces botocore's
    reading of HTTP(S)_PROXY; its NO_PROXY check applies to environment proxies only)."""
    import boto3
    from botocore.config import Config

    proxies = {"http": egress_proxy, "https": egress_proxy} if egress_proxy else {}
    return boto3.session.Session().client(
        "sts",
        endpoint_url=endpoint,
        region_name=region,
        config=Config(
            connect_timeout=5,
            read_timeout=15,
            retries={"max_attempts": 2, "mode": "standard"},
            proxies=proxies,
        ),
    )


def role_error(exc: BaseException, target: RoleTarget) -> RoleError:
    """What an AssumeRole failure means, naming the role and what to check. Built from codes
    only, never from the service's text."""
    from botocore.exceptions import (
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        ReadTimeoutError,
    )

    prefix = f"AssumeRole of {target.role_arn} failed"
    if isinstance(exc, NoCredentialsError):
        return RoleError(
            AUTH,
            f"{prefix}: callvault has no AWS identity of its own (operator: configure AWS "
            "credentials for this process)",
        )
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code") or "")
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        entry = _STS_CODES.get(code)
        if entry is not None:
            kind, advice = entry
            principal = (
                storage_settings.current().aws_principal_arn
                or _principals.get(target.sts_endpoint or "")
                or "callvault's principal"
            )
            text = advice.format(principal=principal, external_id=target.external_id)
            return RoleError(kind, f"{prefix}: {code} — {text}")
        if status >= 500 or status in (408, 429):
            return RoleError(TRANSIENT, f"{prefix}: HTTP {status} — STS is unavailable")
        return RoleError(AUTH, f"{prefix}: {code or f'HTTP {status}'} — STS refused the request")
    if isinstance(exc, EndpointConnectionError | ConnectTimeoutError | ReadTimeoutError):
        return RoleError(TRANSIENT, f"{prefix}: the STS endpoint is unreachable")
    return RoleError(TRANSIENT, f"{prefix}: unexpected {type(exc).__name__}")


# the one cache of this process
SESSIONS = RoleSessions()


# ---- the customer's setup (pure, except principal_arn)


def principal_arn(*, region: str = "us-east-1") -> str:
    """callvault's own AWS principal: CALLVAULT_AWS_PRINCIPAL_ARN, else GetCallerIdentity of
    AWS_ENDPOINT_URL_STS or AWS's STS. Raises RoleError when neither is available."""
    configured = storage_settings.current().aws_principal_arn
    if configured:
        return configured
    endpoint = aws_sts_endpoint(region)
    if endpoint in _principals:
        return _principals[endpoint]
    target = RoleTarget("callvault's principal", "", "", endpoint, region)
    try:
        client = SESSIONS._client(endpoint, region)
        found = str(client.get_caller_identity()["Arn"])
    except Exception as exc:
        error = role_error(exc, target)
        raise RoleError(
            error.kind,
            error.reason.replace(
                "AssumeRole of callvault's principal failed",
                "GetCallerIdentity failed (operator: set CALLVAULT_AWS_PRINCIPAL_ARN)",
            ),
        ) from None
    _principals[endpoint] = found
    return found


# GetCallerIdentity answers, per STS endpoint: this process's identity does not change
_principals: dict[str, str] = {}


def trust_policy(principal: str, external_id: str) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": principal},
                "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"sts:ExternalId": external_id}},
            }
        ],
    }


def permissions_policy(bucket: str | None) -> dict[str, Any]:
    """Least privilege: put recordings, read them back (verification, download links), delete
    (the validate probe cleans up after itself)."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["s3:PutObject", "s3:GetObject", "s3:DeleteObject"],
                "Resource": f"arn:aws:s3:::{bucket or 'BUCKET'}/*",
            }
        ],
    }
