"""Every exception ebind raises, under one root.

The tree::

    EbindError
    ├── InvalidArguments (TypeError, ValueError)   bad input, rejected before anything is published
    │   └── InvalidName                            an id, task name, target or label that cannot be
    │                                              used in a subject or KV key
    ├── PayloadTooLarge (ValueError)               message over the server's max_payload
    ├── UnknownTask (KeyError)                     name not in the registry
    ├── TaskFailed                                 a task ended in failure (``.error``: TaskError)
    ├── TaskRevoked                                raised in a handler whose task was revoked
    ├── TaskTimeout (TimeoutError)                 a future's wait ran out
    ├── PermissionDenied                           the server refused this user the operation
    ├── PublishFailed                              the server did not confirm a publish in time
    │   └── StreamFull                             a stream's size bound refused the message
    ├── ResultExpired (LookupError)                the result outlived its retention
    ├── ConnectionFailed (ConnectionError)         the server could not be reached or refused
    │   └── AuthenticationFailed                   the credentials were refused
    ├── ServerVersionError                         nats-server older than ebind supports
    ├── DLQEntryNotFound (KeyError)                no dead letter at that sequence
    ├── NotConnected (RuntimeError)                an App was used before connect() / after close()
    │   └── WrongEventLoop                         used from a loop it is not connected on
    ├── NonRetryable                               raised by a handler: fail now, never retry
    └── WorkflowError                              the workflow engine's errors
        ├── CycleError
        ├── DAGCanceled
        ├── DAGNotFound (KeyError)
        ├── DAGNotPaused
        ├── DAGNotRunning
        ├── DAGRunning
        ├── DuplicateStep
        ├── StaleRevision
        ├── StepCanceled
        ├── StepFailed
        ├── StepNotFound (KeyError)
        ├── StepSkipped
        ├── SignalNotFound (KeyError)
        ├── ResolveError                           a step's Ref/SignalRef args cannot be resolved
        ├── PlacementError                         a step's execution target cannot be resolved
        ├── RecordCorrupt                          a stored record does not decode or names
        │                                          another key
        └── RetryRefused                           nothing a retry could restart

``ebind.sync.SyncCallInEventLoop`` (a blocking call made inside a running event loop) is
defined with the blocking API.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ebind.wire import TaskError

__all__ = [
    "AuthenticationFailed",
    "ConnectionFailed",
    "CycleError",
    "DAGCanceled",
    "DAGNotFound",
    "DAGNotPaused",
    "DAGNotRunning",
    "DAGRunning",
    "DLQEntryNotFound",
    "DuplicateStep",
    "EbindError",
    "InvalidArguments",
    "InvalidName",
    "NonRetryable",
    "NotConnected",
    "PayloadTooLarge",
    "PermissionDenied",
    "PlacementError",
    "PublishFailed",
    "RecordCorrupt",
    "ResolveError",
    "ResultExpired",
    "RetryRefused",
    "ServerVersionError",
    "SignalNotFound",
    "StaleRevision",
    "StepCanceled",
    "StepFailed",
    "StepNotFound",
    "StepSkipped",
    "StreamFull",
    "TaskFailed",
    "TaskRevoked",
    "TaskTimeout",
    "UnknownTask",
    "WorkflowError",
    "WrongEventLoop",
]


class EbindError(Exception):
    """Root of every error ebind raises."""

    def __str__(self) -> str:
        # KeyError subclasses would otherwise repr() their message in quotes.
        return str(self.args[0]) if self.args else self.__class__.__name__


class InvalidArguments(EbindError, TypeError, ValueError):
    """Arguments, options or a policy were rejected before anything was published."""

    def __init__(self, message: str, *, task_name: str = "", parameter: str = "") -> None:
        super().__init__(message)
        self.task_name = task_name
        self.parameter = parameter


class InvalidName(InvalidArguments):
    """An identifier cannot be used safely in a NATS subject or KV key."""

    def __init__(self, message: str, *, kind: str = "", value: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.value = value


class PayloadTooLarge(EbindError, ValueError):
    """An encoded message is larger than the server accepts."""

    def __init__(self, message: str, *, size: int = 0, limit: int = 0) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit


class UnknownTask(EbindError, KeyError):
    """No handler is registered under that name."""

    def __init__(self, message: str, *, task_name: str = "") -> None:
        super().__init__(message)
        self.task_name = task_name


class TaskFailed(EbindError):
    """A task ended in a terminal failure; ``error`` holds kind and message."""

    def __init__(self, error: TaskError, *, task_id: str = "", task_name: str = "") -> None:
        super().__init__(f"task {task_name or task_id} failed: {error.kind}: {error.message}")
        self.error = error
        self.task_id = task_id
        self.task_name = task_name
        self.kind = error.kind


class TaskRevoked(EbindError):
    """Raised inside a handler by ``ctx.check_revoked()`` once its task was revoked."""


class TaskTimeout(EbindError, TimeoutError):
    """Waiting for a task's result ran out of time (the task may still run)."""

    def __init__(self, message: str, *, task_id: str = "") -> None:
        super().__init__(message)
        self.task_id = task_id


class PermissionDenied(EbindError):
    """The NATS server refused an operation this user has no permission for."""

    def __init__(self, message: str, *, subject: str = "", action: str = "") -> None:
        super().__init__(message)
        self.subject = subject
        self.action = action


class PublishFailed(EbindError):
    """The server did not confirm a publish; retry with the same task_id to stay idempotent."""

    def __init__(
        self, message: str, *, task_id: str = "", subject: str = "", maybe_stored: bool = False
    ) -> None:
        super().__init__(message)
        self.task_id = task_id
        self.subject = subject
        self.maybe_stored = maybe_stored
        """True when the outcome is unknown (no answer in time): the message may be stored."""
        self.accepted: list[Any] = []
        """From a batch publish (``Task.map``): Futures of the tasks the server did store."""
        self.unconfirmed: list[Any] = []
        """From a batch publish: Futures of the tasks whose outcome is unknown (they may run)."""


class StreamFull(PublishFailed):
    """The stream refused the message: a max_msgs / max_bytes bound with discard new is reached.

    Nothing was stored; retry after the backlog drains (or the operator raises the bound).
    """

    def __init__(
        self, message: str, *, task_id: str = "", subject: str = "", stream: str = ""
    ) -> None:
        super().__init__(message, task_id=task_id, subject=subject)
        self.stream = stream


class ResultExpired(EbindError, LookupError):
    """The task's response was removed after the results retention; it can no longer be read."""

    def __init__(self, message: str, *, task_id: str = "") -> None:
        super().__init__(message)
        self.task_id = task_id


class ConnectionFailed(EbindError, ConnectionError):
    """NATS could not be reached or TLS failed; ``server`` is the redacted URL list.

    ``kind`` is ``"unreachable"``, ``"tls"`` or ``"auth"`` (the last for
    :class:`AuthenticationFailed`).
    """

    def __init__(self, message: str, *, server: str = "", kind: str = "unreachable") -> None:
        super().__init__(message)
        self.server = server
        self.kind = kind


class AuthenticationFailed(ConnectionFailed):
    """The server refused the credentials (wrong user, password, token, nkey or creds)."""

    def __init__(self, message: str, *, server: str = "", kind: str = "auth") -> None:
        super().__init__(message, server=server, kind=kind)


class ServerVersionError(EbindError):
    """The connected nats-server is older than ebind supports."""


class DLQEntryNotFound(EbindError, KeyError):
    """No dead-letter entry exists at the given stream sequence."""

    def __init__(self, message: str, *, seq: int = 0) -> None:
        super().__init__(message)
        self.seq = seq


class NotConnected(EbindError, RuntimeError):
    """The App is not connected; call ``await app.connect()`` or use ``async with app``."""


class WrongEventLoop(NotConnected):
    """The App was used from an event loop other than the one its connection runs on."""


class NonRetryable(EbindError):
    """Raised by a handler to fail the task at once, without retries.

    ``kind`` becomes the TaskError kind (default ``handler``) and the message its message.
    """

    def __init__(self, message: str = "", *, kind: str = "handler") -> None:
        super().__init__(message or "non-retryable failure")
        self.kind = kind


class WorkflowError(EbindError):
    """Base of the workflow sentinels; carries the DAG and step ids when known."""

    default_message = "workflow error"

    def __init__(self, message: str = "", *, dag_id: str = "", step_id: str = "") -> None:
        super().__init__(message or self.default_message)
        self.dag_id = dag_id
        self.step_id = step_id


class CycleError(WorkflowError):
    """The DAG's dependencies contain a cycle."""

    default_message = "workflow: cycle detected"


class DAGCanceled(WorkflowError):
    """The DAG was canceled and accepts no new work."""

    default_message = "workflow: DAG canceled"


class DAGNotFound(WorkflowError, KeyError):
    """No DAG meta record exists for that id."""

    default_message = "workflow: DAG not found"


class DAGNotPaused(WorkflowError):
    """Resume was called on a DAG that is not paused."""

    default_message = "workflow: DAG not paused"


class DAGNotRunning(WorkflowError):
    """The DAG is not running: a pause of it, or a step added to it once it finished."""

    default_message = "workflow: DAG not running"


class DuplicateStep(WorkflowError):
    """A step id is already used in this DAG."""

    default_message = "workflow: duplicate step ID"


class StaleRevision(WorkflowError):
    """A compare-and-set found a newer revision than expected."""

    default_message = "workflow: stale revision"


class StepCanceled(WorkflowError):
    """The awaited step was canceled before it started."""

    default_message = "workflow: step canceled"


class StepFailed(WorkflowError):
    """The awaited step ended failed; ``error_kind`` and ``error_message`` say why."""

    default_message = "workflow: step failed"

    def __init__(
        self,
        message: str = "",
        *,
        dag_id: str = "",
        step_id: str = "",
        error_kind: str = "",
        error_message: str = "",
    ) -> None:
        super().__init__(message, dag_id=dag_id, step_id=step_id)
        self.error_kind = error_kind
        self.error_message = error_message


class StepNotFound(WorkflowError, KeyError):
    """No step with that id exists in the DAG."""

    default_message = "workflow: step not found"


class StepSkipped(WorkflowError):
    """The awaited step was skipped because a required upstream failed or was skipped."""

    default_message = "workflow: step skipped"


class SignalNotFound(WorkflowError, KeyError):
    """No signal record exists under that name."""

    default_message = "workflow: signal not found"


class ResolveError(WorkflowError):
    """A step's Ref or SignalRef arguments cannot be resolved; ``upstream`` names the source."""

    default_message = "workflow: cannot resolve step arguments"

    def __init__(
        self, message: str = "", *, dag_id: str = "", step_id: str = "", upstream: str = ""
    ) -> None:
        super().__init__(message, dag_id=dag_id, step_id=step_id)
        self.upstream = upstream


class PlacementError(WorkflowError):
    """A step's execution target cannot be resolved from its placement."""

    default_message = "workflow: cannot resolve step placement"


class DAGRunning(WorkflowError):
    """A destructive operation was refused because the DAG has not finished."""

    default_message = "workflow: DAG is still running"


class RecordCorrupt(WorkflowError):
    """A stored workflow record cannot be used: it does not decode, or names another key."""

    default_message = "workflow: stored record is corrupt"

    def __init__(
        self, message: str = "", *, key: str = "", dag_id: str = "", step_id: str = ""
    ) -> None:
        super().__init__(message, dag_id=dag_id, step_id=step_id)
        self.key = key


class RetryRefused(WorkflowError):
    """Nothing to retry: the DAG or step is not in a state a retry can restart."""

    default_message = "workflow: nothing to retry"
