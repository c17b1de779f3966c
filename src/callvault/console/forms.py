"""HTML forms <-> the API's request models.

The console validates nothing itself: a form is turned into the very request body the API
takes (`CredentialsRequest`, the application requests) and the API's models and services
decide; their messages are shown next to the form.

The storage form is derived from the API's configuration models: one fieldset per backend,
one input per model field (required or optional as the model says, a textarea for JSON
fields, secret fields as each provider lists them in storage/registry.py). A new backend
variant or a new field (say `role_arn`, `sas_token`) appears in the form once the API's model
has it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from callvault.errors import UNION_TAGS, error_message
from callvault.storage.registry import PROVIDERS

# the field that picks the shape; not an input of its own
_DISCRIMINATOR = "backend"


@dataclass(frozen=True)
class FieldSpec:
    backend: str
    name: str
    required: bool
    secret: bool
    multiline: bool
    description: str

    @property
    def input_name(self) -> str:
        return f"{self.backend}.{self.name}"

    @property
    def input_id(self) -> str:
        return f"storage-{self.backend}-{self.name}".replace("_", "-")

    @property
    def label(self) -> str:
        return self.name.replace("_", " ")


@dataclass(frozen=True)
class BackendForm:
    backend: str
    title: str
    fields: tuple[FieldSpec, ...]


def _is_json(extra: Any) -> bool:
    return isinstance(extra, dict) and extra.get("contentMediaType") == "application/json"


def storage_forms() -> tuple[BackendForm, ...]:
    """One fieldset per backend the API accepts, in the API's order."""
    forms = []
    for provider in PROVIDERS:
        backend, model = provider.backend, provider.configuration
        fields = tuple(
            FieldSpec(
                backend=backend,
                name=name,
                required=info.is_required(),
                secret=name in provider.secret_fields,
                multiline=_is_json(info.json_schema_extra),
                description=info.description or "",
            )
            for name, info in model.model_fields.items()
            if name != _DISCRIMINATOR
        )
        forms.append(BackendForm(backend, (model.__doc__ or backend).strip(), fields))
    return tuple(forms)


STORAGE_FORMS = storage_forms()
# input names of every secret field: never rendered back as submitted
SECRET_INPUTS = frozenset(
    spec.input_name for form in STORAGE_FORMS for spec in form.fields if spec.secret
)


def refused_values(
    submitted: Mapping[str, str], stored: Mapping[str, str] | None
) -> dict[str, str]:
    """What a refused storage form shows again: what was typed, except secrets — those are
    never echoed (a page, a cache or a screenshot would carry them); the stored ones, masked
    as GET shows them, stand in where there are any, so a masked value sent back still keeps
    the stored secret."""
    kept = {name: value for name, value in submitted.items() if name not in SECRET_INPUTS}
    for name, value in (stored or {}).items():
        if name in SECRET_INPUTS:
            kept[name] = value
    return kept


def storage_body(form: Mapping[str, Any]) -> dict[str, Any]:
    """The body of POST/PUT /v2/custom_storage_credentials from the submitted form: the chosen
    backend and its fieldset's values (empty optional fields left out)."""
    backend = str(form.get("backend", ""))
    configuration: dict[str, Any] = {}
    for backend_form in STORAGE_FORMS:
        if backend_form.backend != backend:
            continue
        for spec in backend_form.fields:
            value = form.get(spec.input_name)
            value = value if isinstance(value, str) else ""
            if value == "" and not spec.required:
                continue
            configuration[spec.name] = value
    return {"backend": backend, "configuration": configuration}


def stored_values(backend: str, masked_configuration: Mapping[str, Any]) -> dict[str, str]:
    """Input values of the stored (already masked) configuration, by input name."""
    return {
        f"{backend}.{name}": str(value)
        for name, value in masked_configuration.items()
        if name != _DISCRIMINATOR and value is not None
    }


# ---- applications

APPLICATION_FIELDS = (
    "application_name",
    "webhook_event_url",
    "webhook_event_failover_url",
    "webhook_api_version",
    "webhook_timeout_secs",
)


def application_body(form: Mapping[str, Any]) -> dict[str, Any]:
    """The body of POST/PATCH /v2/call_control_applications from the submitted form."""
    body: dict[str, Any] = {}
    for name in APPLICATION_FIELDS:
        value = form.get(name)
        body[name] = value.strip() if isinstance(value, str) else ""
    timeout = body["webhook_timeout_secs"]
    # an empty box means "the default" (null); digits are a number; anything else goes to the
    # API's model as is and is refused with its message
    body["webhook_timeout_secs"] = int(timeout) if timeout.isdigit() else (timeout or None)
    body["active"] = form.get("active") == "on"
    return body


# ---- messages


@dataclass(frozen=True)
class Problem:
    field: str | None
    message: str


def problems_of(exc: ValidationError) -> list[Problem]:
    """The validation errors as the API words them, with the field each one is about."""
    found = []
    for error in exc.errors():
        parts = [
            str(part)
            for part in error.get("loc", ())
            if not (isinstance(part, str) and (part.startswith("function-") or part in UNION_TAGS))
        ]
        field = parts[-1] if parts else None
        message = error_message(error)  # a pattern in words, as the API says it
        found.append(Problem(field, f"{field}: {message}" if field else message))
    return found
