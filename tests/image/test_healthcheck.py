"""The image's HEALTHCHECK finds the address of `callvault serve` in its command line (pure
logic; the image test runs it for real in a container)."""

from __future__ import annotations

import pytest
from image.healthcheck import health_url


@pytest.mark.parametrize(
    ("args", "url"),
    [
        (["serve", "--host", "0.0.0.0"], "http://127.0.0.1:8000/health"),
        (["serve", "--host", "0.0.0.0", "--port", "9001"], "http://127.0.0.1:9001/health"),
        (["serve", "--port=9002", "--no-worker"], "http://127.0.0.1:9002/health"),
        (["serve", "--host", "10.1.2.3", "--port", "80"], "http://10.1.2.3:80/health"),
        (["serve", "--host", "::", "--port", "8080"], "http://127.0.0.1:8080/health"),
        (["serve", "--host", "::1"], "http://[::1]:8000/health"),
    ],
)
def test_health_url_follows_the_serve_command_line(args: list[str], url: str) -> None:
    assert health_url(args) == url
