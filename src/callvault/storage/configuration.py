"""What every provider module uses to describe its configuration: field types, the secret
masking rule, the `Provider` record the registry composes. Pure; no provider named here.

Secrets are write-only: answers show all but their last 4 characters replaced by `*`, and a
PUT that sends such a masked value back keeps the stored secret (so read-modify-write clients
work). Provider models accept a masked value for every secret field; the credentials domain
puts the stored secret back before anything opens a store.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from callvault.storage.base import ObjectStore

MASK_CHAR = "*"
VISIBLE_CHARS = 4
# a secret this short would be given away by its last 4 characters: mask it whole
MIN_LENGTH_TO_SHOW_TAIL = 12

Text = Annotated[str, Field(min_length=1, max_length=1024)]
Secret = Annotated[str, Field(min_length=1, max_length=64 * 1024)]

NO_WHITESPACE = r"^\S+$"
MASK_PATTERN = r"^\*{4}"
MASK_NOTE = "or the masked value GET answered, which keeps the stored secret"
MASKED_ANSWER = "Masked: all but the last 4 characters."

# keys the credentials domain adds to a stored configuration before opening its store (never
# stored with it, never answered)
EXTERNAL_ID_KEY = "external_id"
CONNECTION_ID_KEY = "connection_id"


def path_style_url(endpoint: str, bucket: str, key: str) -> str:
    """`{endpoint}/{bucket}/{key}` (an Azure container, an s3-generic bucket), the key
    percent-encoded so that the URL stays valid."""
    return f"{endpoint.rstrip('/')}/{bucket}/{quote(key, safe='/')}"


def mask(secret: str) -> str:
    """`secret` with all but its last 4 characters replaced by `*` (all of it when short)."""
    if len(secret) < MIN_LENGTH_TO_SHOW_TAIL:
        return MASK_CHAR * len(secret)
    return MASK_CHAR * (len(secret) - VISIBLE_CHARS) + secret[-VISIBLE_CHARS:]


def looks_masked(value: str) -> bool:
    """True for a value that is a mask rather than a secret (it starts with `****`)."""
    return value.startswith(MASK_CHAR * VISIBLE_CHARS)


def invalid(kind: str, message: str) -> PydanticCustomError:
    """A validation error for a configuration field; the message never includes the value
    (values may be secrets)."""
    return PydanticCustomError(kind, message)


def no_whitespace(value: str, what: str) -> str:
    if value != value.strip() or any(ch.isspace() for ch in value):
        raise invalid("whitespace", f"{what} must not contain whitespace")
    return value


def checked_bucket(rule: Callable[[str], str | None], name: str) -> str:
    reason = rule(name)
    if reason is not None:
        raise invalid("bucket_name", reason)
    return name


def one_form(data: Any, model: str, *, alternative: str, fields: tuple[str, ...], note: str) -> Any:
    """For a model `before` validator: exactly one of two ways to authenticate, `fields` (all
    required together) or `alternative`. Errors point at the field to fix: a missing one of
    `fields`, or `alternative` when both forms are given."""
    if not isinstance(data, dict):
        return data
    if data.get(alternative) is not None:
        if any(data.get(name) is not None for name in fields):
            raise ValidationError.from_exception_data(
                model,
                [
                    InitErrorDetails(
                        type=invalid("credentials_form", note),
                        loc=(alternative,),
                        input=data.get(alternative),
                    )
                ],
            )
        return data
    missing = [name for name in fields if data.get(name) is None]
    if missing:
        raise ValidationError.from_exception_data(
            model,
            [InitErrorDetails(type="missing", loc=(name,), input=data) for name in missing],
        )
    return data


class ConfigurationModel(BaseModel):
    """A request-side configuration: strict, unknown fields refused."""

    model_config = ConfigDict(extra="forbid", strict=True)


class AnswerModel(BaseModel):
    """A response-side configuration: secrets already masked, nothing validated."""


class StoreOpener(Protocol):
    def __call__(
        self,
        configuration: Mapping[str, Any],
        *,
        timeout_secs: float | None = None,
        allow_private_networks: bool = False,
    ) -> ObjectStore: ...


@dataclass(frozen=True)
class Provider:
    """Everything the rest of callvault may know about one custom-storage backend."""

    backend: str
    noun: str  # what its bucket is called in reasons: "bucket", "container"
    configuration: type[ConfigurationModel]  # body of POST/PUT (Telnyx shape + ours)
    answer: type[AnswerModel]  # what GET answers, secrets masked
    secret_fields: tuple[str, ...]
    bucket_name_error: Callable[[str], str | None]
    open: StoreOpener
    # (field, value) pairs that GET answers besides the stored configuration, computed from
    # it (e.g. an expiry read from a token); never a secret
    derived_fields: Callable[[Mapping[str, Any]], dict[str, Any]] = field(
        default=lambda _configuration: {}
    )
    # whether opening this configuration needs the connection's ExternalId (an assumed role):
    # the credentials domain then adds EXTERNAL_ID_KEY and CONNECTION_ID_KEY before opening
    uses_external_id: Callable[[Mapping[str, Any]], bool] = field(
        default=lambda _configuration: False
    )

    def secrets_of(self, configuration: Mapping[str, Any]) -> list[str]:
        """The configuration's secret values (for redaction)."""
        return [
            str(configuration[name])
            for name in self.secret_fields
            if isinstance(configuration.get(name), str) and configuration[name]
        ]

    def masked(self, configuration: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of `configuration` fit to answer: every secret field masked."""
        return {
            name: mask(value) if name in self.secret_fields and isinstance(value, str) else value
            for name, value in configuration.items()
        }
