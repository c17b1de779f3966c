"""The worker fixture of tests/worker, for the delivery-record tests here."""

from tests.worker.conftest import start_worker

__all__ = ["start_worker"]
