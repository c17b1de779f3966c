"""The image's HEALTHCHECK finds the address of `callvault serve` (its /ready) and of a
worker's metrics port in their command lines (pure logic; the image test runs it for real in a
container)."""

from __future__ import annotations

import pytest
from image.healthcheck import health_url, worker_metrics_url


@pytest.mark.parametrize(
    ("args", "url"),
    [
        (["serve", "--host", "0.0.0.0"], "http://127.0.0.1:8000/ready"),
        (["serve", "--host", "0.0.0.0", "--port", "9001"], "http://127.0.0.1:9001/ready"),
        (["serve", "--port=9002", "--no-worker"], "http://127.0.0.1:9002/ready"),
        (["serve", "--host", "10.1.2.3", "--port", "80"], "http://10.1.2.3:80/ready"),
        (["serve", "--host", "::", "--port", "8080"], "http://127.0.0.1:8080/ready"),
        (["serve", "--host", "::1"], "http://[::1]:8000/ready"),
    ],
)
def test_health_url_follows_the_serve_command_line(args: list[str], url: str) -> None:
    assert health_url(args) == url


def test_a_worker_is_checked_on_its_metrics_port_when_it_has_one() -> None:
    assert worker_metrics_url(["worker"], {}) is None
    assert worker_metrics_url(["worker", "--metrics-port", "9100"], {}) == (
        "http://127.0.0.1:9100/metrics"
    )
    assert worker_metrics_url(["worker"], {"CALLVAULT_METRICS_PORT": "9101"}) == (
        "http://127.0.0.1:9101/metrics"
    )
    assert worker_metrics_url(
        ["worker", "--metrics-host", "0.0.0.0"], {"CALLVAULT_METRICS_PORT": "1"}
    ) == ("http://127.0.0.1:1/metrics")
