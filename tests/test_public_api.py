"""The public names of ebind and ebind.errors are pinned (changing them is an API change)."""

from __future__ import annotations

import ebind
import ebind.errors


def test_ebind_all_is_pinned_and_sorted() -> None:
    assert ebind.__all__ == [
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
    # sorted as ruff sorts __all__: constants first, then the rest in code-point order
    assert ebind.__all__ == sorted(ebind.__all__, key=lambda n: (not n.isupper(), n))


def test_ebind_names_resolve() -> None:
    for name in ebind.__all__:
        assert getattr(ebind, name) is not None
    assert isinstance(ebind.__version__, str) and ebind.__version__


def test_errors_all_is_pinned() -> None:
    assert sorted(ebind.errors.__all__) == ebind.errors.__all__
    assert ebind.errors.__all__ == [
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


def test_every_error_derives_from_the_root() -> None:
    for name in ebind.errors.__all__:
        assert issubclass(getattr(ebind.errors, name), ebind.errors.EbindError)
