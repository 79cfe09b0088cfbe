"""ebind: Celery-style tasks and durable DAG workflows on NATS JetStream only."""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

from ebind.app import App
from ebind.context import Context, current_context
from ebind.errors import (
    EbindError,
    InvalidArguments,
    NonRetryable,
    PayloadTooLarge,
    PublishFailed,
    ResultExpired,
    StreamFull,
    TaskFailed,
    TaskRevoked,
    TaskTimeout,
    UnknownTask,
)
from ebind.future import Future
from ebind.limits.concurrency_rules import Concurrency
from ebind.progress import Progress, ProgressUnavailable
from ebind.retention import Retention
from ebind.retry import RetryPolicy
from ebind.task import Task
from ebind.wire import TaskEnvelope, TaskError

DISTRIBUTION = "ebind-nats"
"""The name ebind is installed under (``pip install ebind-nats``); the import name is ``ebind``."""

try:
    __version__ = _version(DISTRIBUTION)
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = [
    "DISTRIBUTION",
    "App",
    "Concurrency",
    "Context",
    "EbindError",
    "Future",
    "InvalidArguments",
    "NonRetryable",
    "PayloadTooLarge",
    "Progress",
    "ProgressUnavailable",
    "PublishFailed",
    "ResultExpired",
    "Retention",
    "RetryPolicy",
    "StreamFull",
    "Task",
    "TaskEnvelope",
    "TaskError",
    "TaskFailed",
    "TaskRevoked",
    "TaskTimeout",
    "UnknownTask",
    "__version__",
    "current_context",
]
