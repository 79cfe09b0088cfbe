"""The worker: consumes task messages, runs handlers, reports outcomes.

``Worker`` is normally created with ``app.worker(...)`` or the ``ebind worker`` command.
"""

from ebind.worker.health import HealthEndpoint, HealthLimits, HealthServeError, serve_health
from ebind.worker.hook import StepHook, StepUnproven
from ebind.worker.middleware import (
    Handler,
    Middleware,
    add_outcome_listener,
    chain,
    log_middleware,
    recover_middleware,
)
from ebind.worker.outcome import AttemptError
from ebind.worker.worker import Worker

__all__ = [
    "AttemptError",
    "Handler",
    "HealthEndpoint",
    "HealthLimits",
    "HealthServeError",
    "Middleware",
    "StepHook",
    "StepUnproven",
    "Worker",
    "add_outcome_listener",
    "chain",
    "log_middleware",
    "recover_middleware",
    "serve_health",
]
