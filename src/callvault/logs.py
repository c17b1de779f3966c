"""Structured logs: every line on stderr is one JSON object — callvault's own (structlog),
uvicorn's and every other library's (the standard `logging` module) — with a traceback as the
`exception` field of its line, never as lines of its own. The level comes from
CALLVAULT_LOG_LEVEL (debug, info, warning, error; default info)."""

from __future__ import annotations

import logging
import logging.config
import sys
from typing import Any

import structlog

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
# libraries that log every request at INFO: kept at WARNING unless the level asked for is
# debug, so a busy worker's log is its own
CHATTY_LIBRARIES = ("httpx", "httpcore", "google")
# libraries whose request logs hold secrets (botocore: STS answers with session keys; azure and
# urllib3: SAS signatures in URLs): WARNING at every level, debug included (storage/aws_roles.py
# and storage/azure.py set the same when imported; this keeps a logging config from undoing it)
SECRET_BEARING_LIBRARIES = ("botocore", "boto3", "azure", "urllib3")


def log_level(name: str) -> int:
    try:
        return LEVELS[name.strip().lower()]
    except KeyError:
        raise ValueError(
            f"CALLVAULT_LOG_LEVEL must be one of {', '.join(LEVELS)}, not {name!r}"
        ) from None


def _shared_processors() -> list[structlog.typing.Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]


def json_formatter() -> logging.Formatter:
    """The formatter of every standard-library record: the same JSON as callvault's own lines
    (named in the logging config by its import path, so uvicorn's dictConfig can use it)."""
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *_shared_processors()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.JSONRenderer(),
        ],
    )


def logging_config(level: int = logging.INFO) -> dict[str, Any]:
    """A `logging.config.dictConfig` for the standard library, also handed to uvicorn as its
    `log_config` (else it installs its own plain-text handlers)."""
    debug = level <= logging.DEBUG
    # every library named either way, so that configuring again (tests, a second command in
    # one process) never keeps a level an earlier configuration set
    chatty_level = "NOTSET" if debug else "WARNING"
    root_level = logging.getLevelName(level if debug else max(level, logging.WARNING))
    ours = logging.getLevelName(level)
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "callvault.logs.json_formatter"}},
        "filters": {"logged_by_callvault": {"()": "callvault.logs.LoggedByCallvault"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": root_level},
        "loggers": {
            # uvicorn's start, stop and error lines at the level asked for; access lines are off
            "uvicorn": {"level": ours, "handlers": [], "propagate": True},
            "uvicorn.error": {
                "level": ours,
                "handlers": [],
                "propagate": True,
                "filters": ["logged_by_callvault"],
            },
            "uvicorn.access": {"level": "WARNING", "handlers": [], "propagate": True},
            **{name: {"level": chatty_level, "propagate": True} for name in CHATTY_LIBRARIES},
            **{name: {"level": "WARNING", "propagate": True} for name in SECRET_BEARING_LIBRARIES},
        },
    }


class LoggedByCallvault(logging.Filter):
    """Drops uvicorn's "Exception in ASGI application": the app's error handler
    (errors.py) has logged that error already, with its path and traceback — one line per
    error, not two."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Exception in ASGI application")


def configure_logging(level: int | str = logging.INFO) -> None:
    if isinstance(level, str):
        level = log_level(level)
    structlog.configure(
        processors=[*_shared_processors(), structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # callvault's own lines go straight to stderr (no stdlib round trip on hot paths)
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.config.dictConfig(logging_config(level))
    logging.captureWarnings(True)
