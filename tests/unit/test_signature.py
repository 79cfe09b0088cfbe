"""inspect_handler: every registration-time check, and what a HandlerSpec records."""

from __future__ import annotations

from typing import Any

import pytest
import sig_samples as s

from ebind.context import Context
from ebind.errors import InvalidArguments, InvalidName
from ebind.retry import RetryPolicy
from ebind.signature import NO_DEFAULT, default_name, inspect_handler


def test_default_name_is_module_and_qualname() -> None:
    assert inspect_handler(s.fetch_user).name == "sig_samples.fetch_user"


def test_method_names_use_the_qualname() -> None:
    assert default_name(s.Holder.method) == "sig_samples.Holder.method"


def test_async_handler_is_detected() -> None:
    spec = inspect_handler(s.fetch_user)
    assert spec.is_async and not spec.wants_context
    assert spec.return_type is s.User
    assert [p.name for p in spec.params] == ["user_id"]


def test_leading_context_is_excluded_from_params() -> None:
    spec = inspect_handler(s.resize, name="img.resize")
    assert spec.wants_context and not spec.is_async
    assert [(p.name, p.annotation) for p in spec.params] == [("image_id", str), ("width", int)]
    assert spec.params[1].default == 800 and spec.params[0].default is NO_DEFAULT
    assert spec.required_count == 1
    assert spec.describe_params() == "image_id, width=800"


def test_missing_annotations_become_any() -> None:
    spec = inspect_handler(s.no_annotations)
    assert [p.annotation for p in spec.params] == [Any, Any]
    assert spec.return_type is Any


def test_none_return_is_recorded() -> None:
    assert inspect_handler(s.returns_nothing).return_type is type(None)


def test_options_are_recorded() -> None:
    policy = RetryPolicy(maximum_attempts=3)
    spec = inspect_handler(
        s.resize,
        name="img.resize",
        retry=policy,
        timeout=60,
        aliases=["old.resize"],
        dont_retry=(ValueError,),
    )
    assert spec.retry is policy and spec.timeout == 60.0
    assert spec.aliases == ("old.resize",) and spec.names == ("img.resize", "old.resize")
    assert spec.dont_retry == (ValueError,)


def test_nested_function_needs_a_name() -> None:
    def inner(x: int) -> int:
        return x

    with pytest.raises(InvalidArguments, match=r"inside another function.*pass name="):
        inspect_handler(inner)
    assert inspect_handler(inner, name="my.inner").name == "my.inner"


def test_lambda_needs_a_name() -> None:
    with pytest.raises(InvalidArguments, match=r"lambdas"):
        inspect_handler(lambda x: x)


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("", "non-empty"),
        ("a b", r"' ' \(U\+0020\)"),
        ("a..b", "empty part"),
        ("a.*", r"'\*'"),
        ("a.>", "'>'"),
        ("$SYS.x", r"'\$'"),
        ("café", "'é'"),
        ("x" * 300, "300 characters long"),
    ],
)
def test_bad_names_are_rejected(name: str, match: str) -> None:
    with pytest.raises(InvalidName, match=match):
        inspect_handler(s.fetch_user, name=name)


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf")])
def test_bad_timeouts_are_rejected(timeout: float) -> None:
    with pytest.raises(InvalidArguments, match=r"timeout must be a positive number"):
        inspect_handler(s.fetch_user, timeout=timeout)


def test_non_numeric_timeout_is_rejected() -> None:
    with pytest.raises(InvalidArguments, match=r"timeout must be a number of seconds, got str"):
        inspect_handler(s.fetch_user, timeout="5")  # type: ignore[arg-type]


def test_retry_must_be_a_policy() -> None:
    with pytest.raises(InvalidArguments, match=r"etry must be an ebind.RetryPolicy"):
        inspect_handler(s.fetch_user, retry={"maximum_attempts": 3})  # type: ignore[arg-type]


def test_dont_retry_must_hold_exception_classes() -> None:
    with pytest.raises(InvalidArguments, match=r"dont_retry must hold exception classes"):
        inspect_handler(s.fetch_user, dont_retry=("ValueError",))  # type: ignore[arg-type]


def test_alias_equal_to_name_is_rejected() -> None:
    with pytest.raises(InvalidArguments, match=r"listed twice or equals the task name"):
        inspect_handler(s.fetch_user, name="a.b", aliases=["a.b"])


def test_bad_alias_is_rejected() -> None:
    with pytest.raises(InvalidName, match=r"invalid task name 'old name'"):
        inspect_handler(s.fetch_user, aliases=["old name"])


def test_var_args_are_rejected() -> None:
    def star(*xs: int) -> None: ...

    with pytest.raises(InvalidArguments, match=r"'xs' is variadic positional.*regular parameter"):
        inspect_handler(star, name="star")


def test_keyword_only_params_are_rejected() -> None:
    def kw(a: int, *, b: int) -> None: ...

    with pytest.raises(InvalidArguments, match=r"'b' is keyword-only"):
        inspect_handler(kw, name="kw")


def test_context_must_come_first() -> None:
    def late(x: int, ctx: Context) -> None: ...

    with pytest.raises(InvalidArguments, match=r"Context parameter 'ctx' must be the first"):
        inspect_handler(late, name="late")


def test_not_callable_is_rejected() -> None:
    with pytest.raises(InvalidArguments, match=r"needs a function, got int"):
        inspect_handler(3)  # type: ignore[arg-type]


def test_unresolvable_annotation_is_rejected() -> None:
    def f(x: Missing) -> None: ...  # type: ignore[name-defined]  # noqa: F821

    with pytest.raises(InvalidArguments, match=r"cannot resolve the annotations.*module level"):
        inspect_handler(f, name="f")
