"""Pure parts of the console: the storage form derived from the API's models, form bodies,
the overview chart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from callvault.console.forms import (
    STORAGE_FORMS,
    application_body,
    problems_of,
    storage_body,
    stored_values,
)
from callvault.console.overview import HOURS, hourly_chart
from callvault.credentials.masking import secret_fields
from callvault.credentials.schemas import BACKENDS, CredentialsRequest


def test_the_storage_form_has_every_backend_and_field_the_api_accepts() -> None:
    assert sorted(form.backend for form in STORAGE_FORMS) == sorted(BACKENDS)
    for form in STORAGE_FORMS:
        names = {field.name for field in form.fields}
        secrets = {field.name for field in form.fields if field.secret}
        assert secrets == set(secret_fields(form.backend))
        assert "bucket" in names and "backend" not in names
    gcs = next(form for form in STORAGE_FORMS if form.backend == "gcs")
    assert [f.name for f in gcs.fields if f.multiline] == ["credentials"]


def test_the_form_becomes_the_api_body_of_the_chosen_backend_only() -> None:
    form = {
        "backend": "s3-generic",
        "s3-generic.bucket": "recordings",
        "s3-generic.region": "us-east-1",
        "s3-generic.endpoint": "https://s3.example.com/",
        "s3-generic.aws_access_key_id": "AKIAEXAMPLE",
        "s3-generic.aws_secret_access_key": "secret-secret-secret",
        "s3.bucket": "ignored",
    }
    body = storage_body(form)
    assert body == {
        "backend": "s3-generic",
        "configuration": {
            "bucket": "recordings",
            "region": "us-east-1",
            "endpoint": "https://s3.example.com/",
            "aws_access_key_id": "AKIAEXAMPLE",
            "aws_secret_access_key": "secret-secret-secret",
        },
    }
    # the API's model decides, with the API's rule (a trailing slash dropped)
    parsed = CredentialsRequest.model_validate(body)
    assert parsed.configuration_fields()["endpoint"] == "https://s3.example.com"


def test_the_api_messages_name_their_field() -> None:
    body = storage_body({"backend": "azure", "azure.bucket": "ok-container"})
    with pytest.raises(ValidationError) as caught:
        CredentialsRequest.model_validate(body)
    fields = {problem.field for problem in problems_of(caught.value)}
    # the provider asks for one of its two forms first (account_key or sas_token)
    assert fields == {"account_key"}
    bad = storage_body(
        {
            "backend": "azure",
            "azure.bucket": "ok-container",
            "azure.account_name": "UPPER",
            "azure.account_key": "not base64!",
        }
    )
    with pytest.raises(ValidationError) as caught:
        CredentialsRequest.model_validate(bad)
    messages = [problem.message for problem in problems_of(caught.value)]
    assert "account_name: account_name must be 3 to 24 lowercase letters and digits" in messages
    assert "account_key: account_key must be base64" in messages


def test_stored_values_fill_the_backends_inputs() -> None:
    values = stored_values("azure", {"backend": "azure", "bucket": "c", "account_key": "****abcd"})
    assert values == {"azure.bucket": "c", "azure.account_key": "****abcd"}


def test_application_form_body() -> None:
    body = application_body(
        {
            "application_name": " A ",
            "webhook_event_url": "https://x.test/h",
            "webhook_event_failover_url": "",
            "webhook_api_version": "2",
            "webhook_timeout_secs": "7",
            "active": "on",
        }
    )
    assert body["application_name"] == "A"
    assert body["webhook_timeout_secs"] == 7 and body["active"] is True
    assert application_body({"webhook_timeout_secs": ""})["webhook_timeout_secs"] is None
    assert application_body({"webhook_timeout_secs": "soon"})["webhook_timeout_secs"] == "soon"
    assert application_body({})["active"] is False


def test_the_chart_bins_the_last_24_hours() -> None:
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    recordings = [
        ("stored", now - timedelta(minutes=5)),
        ("stored", now - timedelta(minutes=50)),
        ("failed", now - timedelta(minutes=30)),
        ("stored", now - timedelta(hours=3, minutes=10)),
        ("stored", now - timedelta(hours=25)),  # too old
        ("received", now - timedelta(minutes=1)),  # not an outcome
    ]
    attempts = [
        (200, now - timedelta(minutes=3)),
        (500, now - timedelta(minutes=4)),
        (None, now - timedelta(minutes=6)),
        (204, now - timedelta(hours=2, minutes=1)),
    ]
    chart = hourly_chart(now, recordings, attempts)
    assert (chart.stored, chart.failed) == (3, 1)
    assert (chart.attempts, chart.successful_attempts) == (4, 2)
    assert chart.success_rate == 50.0
    last_hour = [bar for bar in chart.bars if bar.title.startswith("12:00")]
    assert sorted((bar.kind, bar.title) for bar in last_hour) == [
        ("failed", "12:00: 1 failed"),
        ("stored", "12:00: 2 stored"),
    ]
    # two hours with attempts: two points; 1 of 3 in the last hour, 1 of 1 two hours ago
    assert len(chart.rate_dots) == 2
    assert "1 of 3" in chart.rate_dots[-1][2] and "1 of 1" in chart.rate_dots[0][2]
    # the highest bar (3 recordings in the last hour) fits the axis
    assert chart.y_ticks[-1][1] == "5"
    assert len(chart.x_ticks) == HOURS // 4


def test_an_empty_day_draws_no_bars() -> None:
    chart = hourly_chart(datetime(2026, 1, 1, tzinfo=UTC), [], [])
    assert chart.bars == () and chart.rate_points == "" and chart.success_rate is None
