"""The image, built once per session from the working tree; its figures in the summary."""

from __future__ import annotations

import pytest

from tests.image.podman import BuiltImage, ServiceImages, build_image, build_service_images

FIGURES: list[str] = []


@pytest.fixture(scope="session")
def callvault_image() -> BuiltImage:
    built = build_image()
    cached = "layer cache" if "Using cache" in built.log else "no cache"
    FIGURES.append(
        f"image localhost/callvault ({built.ref[:19]}): {built.size_bytes / 1e6:.0f} MB, "
        f"`make image` took {built.seconds:.0f} s ({cached})"
    )
    return built


@pytest.fixture(scope="session")
def service_images() -> ServiceImages:
    built = build_service_images()
    FIGURES.append(
        f"image {built.postgres}: {built.postgres_bytes / 1e6:.0f} MB; {built.seaweedfs}: "
        f"{built.seaweedfs_bytes / 1e6:.0f} MB; `make compose-images` took {built.seconds:.0f} s"
    )
    return built


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in FIGURES:
        terminalreporter.write_line(line)
