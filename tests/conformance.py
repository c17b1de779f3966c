"""Response bodies checked against Telnyx's own schemas (the spec file in ../shared/reference).

`check_response(method, path, status, body)` finds the operation of the spec subset that a
`/v2` request matched and validates the body against that operation's response schema for the
status (or its `default`), with two readings the reference notes ask for:

- a property the schema does not list as required may be null (Telnyx answers null for unset
  optional fields the spec types as non-null);
- objects are closed: a field the spec does not have fails, except callvault's documented
  extensions (EXTENSIONS below, listed in docs/api.md).

`s3-generic` is treated as part of the spec (all three SDKs have it since 2026-08). Paths the
spec does not have (our own operations) and statuses without a JSON body are not checked.

The spec file is found at `<repo>/../shared/reference/telnyx-openapi-subset.yml` (CI checks
the repository out beside `shared/`), else beside the main checkout of a git worktree, else the
copy kept in `tests/reference/` (so a clone anywhere runs the suite); `$CALLVAULT_TELNYX_SPEC`
overrides them all. If none exists the check fails loudly, never silently passes.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
from pathlib import Path
from typing import Any

import jsonschema_rs
import yaml

REPO = Path(__file__).resolve().parent.parent
SPEC_NAME = "shared/reference/telnyx-openapi-subset.yml"

# callvault's documented additions (docs/api.md), per component schema (or inline location)
EXTENSIONS: dict[str, set[str]] = {
    # format, size and digest of the file, where its bytes are (ours); encryption (issue 12)
    "RecordingResponseData": {"format", "size_bytes", "sha256", "storage", "encryption_details"},
    # customer-key encryption (issue 12)
    "CallControlApplication": {"recording_encryption_key_id"},
    # keyless storage (issue 11) and s3-generic's endpoint
    "S3ConfigurationData": {"role_arn"},
    "S3GenericConfigurationData": {"role_arn"},
    "AzureConfigurationData": {"sas_token", "sas_expires_at"},
    "webhook_delivery": {"next_attempt_at"},
    "attempt": {"error_detail"},
    # an API v1 webhook as sent is the flat body: created_at and webhook_id besides the rest
    "webhook_delivery/webhook": {"created_at", "webhook_id"},
}


class SpecMissing(AssertionError):
    pass


def spec_path() -> Path:
    candidates = [REPO.parent / SPEC_NAME]
    git = REPO / ".git"
    if git.is_file():  # a worktree: "gitdir: <main>/.git/worktrees/<name>"
        gitdir = Path(git.read_text().split(":", 1)[1].strip())
        candidates.append(gitdir.parent.parent.parent.parent / SPEC_NAME)
    candidates.append(REPO / "tests" / "reference" / SPEC_NAME.rsplit("/", 1)[1])
    if os.environ.get("CALLVAULT_TELNYX_SPEC"):
        candidates.insert(0, Path(os.environ["CALLVAULT_TELNYX_SPEC"]))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise SpecMissing(
        "Telnyx's spec subset was not found (looked at "
        + ", ".join(str(c) for c in candidates)
        + "): check out the repository beside shared/ or set CALLVAULT_TELNYX_SPEC."
    )


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    kind = schema.get("type")
    if isinstance(kind, str) and "$ref" not in schema:
        out = {**schema, "type": [kind, "null"]}
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
        return out
    if isinstance(kind, list):
        return {**schema, "type": [*kind, "null"]} if "null" not in kind else schema
    return {"anyOf": [schema, {"type": "null"}]}


def _closed(schema: Any, extensions: dict[str, set[str]], where: str) -> Any:
    """The schema with optional properties nullable and objects closed (plus extensions)."""
    if isinstance(schema, list):
        return [_closed(item, extensions, where) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "properties":
            required = set(schema.get("required", []))
            props = {}
            for name, sub in value.items():
                inner = _closed(sub, extensions, f"{where}/{name}")
                props[name] = inner if name in required else _nullable(inner)
            for name in extensions.get(where, set()):
                props.setdefault(name, {})
            out[key] = props
        elif key in ("items", "anyOf", "oneOf", "allOf", "additionalProperties"):
            out[key] = _closed(value, extensions, where)
        else:
            out[key] = value
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


@functools.cache
def spec() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(spec_path().read_text())
    schemas = document["components"]["schemas"]
    # s3-generic: in every SDK since 2026-08, after this spec file was cut
    generic = copy.deepcopy(schemas["S3ConfigurationData"])
    generic["properties"]["backend"]["enum"] = ["s3-generic"]
    generic["properties"]["endpoint"] = {"type": "string"}
    generic["title"] = "S3-compatible Storage Configuration Data"
    schemas["S3GenericConfigurationData"] = generic
    storage = schemas["CustomStorageConfiguration"]
    storage["properties"]["backend"]["enum"].append("s3-generic")
    storage["properties"]["configuration"]["oneOf"].append(
        {"$ref": "#/components/schemas/S3GenericConfigurationData"}
    )
    document["components"]["schemas"] = {
        name: _closed(schema, EXTENSIONS, name) for name, schema in schemas.items()
    }
    return document


def _template_regex(template: str) -> re.Pattern[str]:
    pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
    return re.compile(f"^/v2{pattern}$")


def operation_for(method: str, path: str) -> dict[str, Any] | None:
    for template, operations in spec()["paths"].items():
        if _template_regex(template).match(path):
            operation: dict[str, Any] | None = operations.get(method.lower())
            return operation
    return None


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node and node["$ref"].startswith("#/components/responses/"):
        node = spec()["components"]["responses"][node["$ref"].rsplit("/", 1)[1]]
    return node


@functools.cache
def _validator(method: str, template_key: str, status_key: str) -> Any:
    operation = spec()["paths"][template_key][method]
    response = _resolve(operation["responses"][status_key])
    schema = response.get("content", {}).get("application/json", {}).get("schema")
    if schema is None:
        return None
    root = {
        **_closed(schema, EXTENSIONS, f"{method} {template_key}"),
        "components": spec()["components"],
    }
    return jsonschema_rs.Draft202012Validator(root)


@functools.cache
def _errors_validator() -> Any:
    root = {
        "$ref": "#/components/schemas/call-recordings_Errors",
        "components": spec()["components"],
    }
    return jsonschema_rs.Draft202012Validator(root)


def check_response(method: str, path: str, status: int, body: bytes | str) -> list[str]:
    """Problems of this response against the spec (empty: conforms or not covered)."""
    method = method.lower()
    for template, operations in spec()["paths"].items():
        if _template_regex(template).match(path) and method in operations:
            break
    else:
        return []
    responses = operations[method]["responses"]
    status_key = str(status) if str(status) in responses else "default"
    if status_key in responses:
        validator = _validator(method, template, status_key)
    elif status >= 400:  # an error the operation does not list: still Telnyx's error body
        validator = _errors_validator()
    else:
        return [f"{method.upper()} {path}: status {status} is not in the spec"]
    if validator is None or not body:
        return []
    try:
        document = json.loads(body)
    except ValueError:
        return [f"{method.upper()} {path} {status}: the body is not JSON"]
    return [
        f"{method.upper()} {path} {status}: {error.message} at {list(error.instance_path)}"
        for error in validator.iter_errors(document)
    ]


def assert_conforms(method: str, path: str, status: int, body: bytes | str) -> None:
    problems = check_response(method, path, status, body)
    assert not problems, "response differs from Telnyx's schema:\n" + "\n".join(problems[:10])
