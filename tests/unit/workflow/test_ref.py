"""Pure tests of ebind.workflow.ref: markers, detection, find_refs and resolve_args."""

from __future__ import annotations

import msgspec
import pytest
from wf_pure_helpers import enc, signal

from ebind.errors import ResolveError, WorkflowError
from ebind.workflow.ref import (
    decode_ref,
    decode_signal_ref,
    find_refs,
    is_ref,
    is_signal_ref,
    make_ref,
    make_ref_or_default,
    or_default_upstreams,
    required_upstreams,
    resolve_args,
    signal_ref,
)
from ebind.workflow.types import Ref, RefMode, SignalRef, StepStatus

DONE, FAILED, SKIPPED, CANCELED = (
    StepStatus.DONE,
    StepStatus.FAILED,
    StepStatus.SKIPPED,
    StepStatus.CANCELED,
)


# --- markers ----------------------------------------------------------------------------


def test_make_ref_encodes_the_seed_envelope() -> None:
    assert enc(make_ref("a")) == (
        b'{"__ebind_ref__":"__ebind_ref__","step_id":"a","mode":"required"}'
    )


def test_make_ref_or_default_carries_the_default_json() -> None:
    assert enc(make_ref_or_default("a", b"99")) == (
        b'{"__ebind_ref__":"__ebind_ref__","step_id":"a","mode":"or_default","default":99}'
    )


def test_make_ref_or_default_with_empty_default_is_null() -> None:
    ref = make_ref_or_default("a", b"")
    assert isinstance(ref.default, msgspec.Raw)
    assert bytes(ref.default) == b"null"


def test_signal_ref_encodes_the_signal_envelope() -> None:
    assert enc(signal_ref("go")) == b'{"__ebind_signal__":"__ebind_signal__","name":"go"}'


def test_is_ref_and_decode_ref_round_trip() -> None:
    raw = enc(make_ref_or_default("up", b'{"x":1}'))
    assert is_ref(raw)
    ref = decode_ref(raw)
    assert ref is not None
    assert (ref.step_id, ref.mode) == ("up", RefMode.OR_DEFAULT)
    assert isinstance(ref.default, msgspec.Raw)
    assert bytes(ref.default) == b'{"x":1}'


@pytest.mark.parametrize(
    "raw", [b"42", b'"hello"', b'{"foo":"bar"}', b"[1,2,3]", b"null", b"true", b"", b"{"]
)
def test_is_ref_rejects_plain_json(raw: bytes) -> None:
    assert not is_ref(raw)
    assert decode_ref(raw) is None


def test_is_ref_rejects_object_without_marker_key_even_with_step_id() -> None:
    assert not is_ref(b'{"step_id":"a","mode":"required"}')


def test_is_ref_rejects_literal_with_marker_only_nested() -> None:
    """A literal that merely contains a Ref deeper is not itself a Ref (Go quirk fixed)."""
    raw = enc({"outer": make_ref("a")})
    assert not is_ref(raw)
    assert find_refs(raw) == [make_ref("a")]


def test_is_ref_rejects_marker_key_with_other_value() -> None:
    assert not is_ref(b'{"__ebind_ref__":5,"step_id":"a"}')


def test_decode_ref_rejects_malformed_ref() -> None:
    assert decode_ref(b'{"__ebind_ref__":"__ebind_ref__","step_id":"a","mode":"bogus"}') is None
    assert decode_ref(b'{"__ebind_ref__":"__ebind_ref__","step_id":""}') is None
    assert decode_ref(b'{"__ebind_ref__":"__ebind_ref__"}') is None


def test_decode_ref_tolerates_surrounding_whitespace() -> None:
    assert decode_ref(b"  " + enc(make_ref("a")) + b"\n") == make_ref("a")


def test_signal_ref_detection() -> None:
    raw = enc(signal_ref("go"))
    assert is_signal_ref(raw)
    assert not is_ref(raw)
    assert decode_signal_ref(raw) == SignalRef(name="go")
    assert decode_signal_ref(enc(make_ref("a"))) is None
    assert not is_signal_ref(b'{"__ebind_signal__":"__ebind_signal__","name":""}')


# --- find_refs ----------------------------------------------------------------------------


def test_find_refs_walks_python_values_in_order() -> None:
    a, b, s = make_ref("a"), make_ref_or_default("b", b"0"), signal_ref("go")
    value = [1, {"k": [a, (b,)], "z": "lit"}, s, a]
    assert find_refs(value) == [a, b, s, a]


def test_find_refs_walks_raw_json_at_any_depth() -> None:
    a, b, s = make_ref("a"), make_ref_or_default("b", b"0"), signal_ref("go")
    raw = enc([1, {"k": [a, {"deep": [[b]]}]}, s])
    assert find_refs(raw) == [a, b, s]
    assert find_refs(msgspec.Raw(raw)) == [a, b, s]


def test_find_refs_does_not_descend_into_a_ref_default() -> None:
    inner = make_ref("x")
    outer = make_ref_or_default("a", enc(inner))
    assert find_refs(enc([outer])) == [outer]


def test_find_refs_ignores_literals_and_malformed_placeholders() -> None:
    raw = b'[1,"__ebind_ref__",{"__ebind_ref__":"__ebind_ref__","mode":"x"},"s"]'
    assert find_refs(raw) == []
    assert find_refs(b"not json") == []
    assert find_refs([b"raw bytes nested are python literals"]) == []


def test_required_and_or_default_upstreams_are_deduped_in_order() -> None:
    args = [make_ref("b"), [make_ref("a"), make_ref("b")], make_ref_or_default("c", b"1")]
    assert required_upstreams(args) == ["b", "a"]
    assert or_default_upstreams(enc(args)) == ["c"]


# --- resolve_args: the seed's sentences ----------------------------------------------------


def test_resolve_args_leaves_literals_unchanged_byte_for_byte() -> None:
    raw = b'[1.50, "x", {"a": [1, 2]}, null]'
    assert resolve_args(raw, {}, {}) == (raw, False)


def test_resolve_args_substitutes_required_ref_with_upstream_result() -> None:
    raw = enc([make_ref("a"), 3])
    assert resolve_args(raw, {"a": b'{"n":5}'}, {"a": DONE}) == (b'[{"n":5},3]', False)


@pytest.mark.parametrize("status", [FAILED, SKIPPED, CANCELED])
def test_resolve_args_required_ref_to_failed_upstream_should_skip(status: StepStatus) -> None:
    raw = enc([make_ref("a")])
    assert resolve_args(raw, {}, {"a": status}) == (b"", True)


@pytest.mark.parametrize("status", [FAILED, SKIPPED, CANCELED])
def test_resolve_args_or_default_substitutes_default(status: StepStatus) -> None:
    raw = enc([make_ref_or_default("a", b"99")])
    assert resolve_args(raw, {}, {"a": status}) == (b"[99]", False)


def test_resolve_args_or_default_without_default_is_null() -> None:
    raw = enc([Ref(step_id="a", mode=RefMode.OR_DEFAULT)])
    assert resolve_args(raw, {}, {"a": FAILED}) == (b"[null]", False)


def test_resolve_args_or_default_takes_result_when_upstream_done() -> None:
    raw = enc([make_ref_or_default("a", b"99")])
    assert resolve_args(raw, {"a": b"1"}, {"a": DONE}) == (b"[1]", False)


def test_resolve_args_done_without_result_errors_naming_step_and_upstream() -> None:
    raw = enc([make_ref("a")])
    with pytest.raises(ResolveError, match="step 'c': upstream 'a' is done but has no result"):
        resolve_args(raw, {}, {"a": DONE}, step_id="c")


def test_resolve_error_is_a_workflow_error_with_fields() -> None:
    with pytest.raises(WorkflowError) as info:
        resolve_args(enc([make_ref("a")]), {}, {"a": DONE}, step_id="c")
    assert isinstance(info.value, ResolveError)
    assert (info.value.step_id, info.value.upstream) == ("c", "a")


@pytest.mark.parametrize("status", [StepStatus.PENDING, StepStatus.RUNNING])
def test_resolve_args_non_terminal_upstream_errors(status: StepStatus) -> None:
    with pytest.raises(ResolveError, match=rf"upstream 'a' not terminal \(status={status.value}\)"):
        resolve_args(enc([make_ref("a")]), {}, {"a": status})


def test_resolve_args_unknown_upstream_errors() -> None:
    with pytest.raises(ResolveError, match=r"upstream 'zz' not terminal \(status=unknown step\)"):
        resolve_args(enc([make_ref("zz")]), {}, {})


def test_resolve_args_mixed_list() -> None:
    raw = enc(["lit", make_ref("a"), 7, make_ref_or_default("b", b'"dflt"')])
    got = resolve_args(raw, {"a": b'"A"'}, {"a": DONE, "b": SKIPPED})
    assert got == (b'["lit","A",7,"dflt"]', False)


def test_resolve_args_substitutes_refs_nested_in_lists_and_dicts() -> None:
    raw = enc([[make_ref("a"), make_ref("b")], {"k": {"deep": make_ref_or_default("c", b"0")}}])
    got, skip = resolve_args(raw, {"a": b"1", "b": b"2"}, {"a": DONE, "b": DONE, "c": FAILED})
    assert not skip
    assert msgspec.json.decode(got) == [[1, 2], {"k": {"deep": 0}}]


def test_resolve_args_nested_required_ref_to_failed_upstream_skips() -> None:
    raw = enc([{"items": [make_ref("a"), make_ref("b")]}])
    assert resolve_args(raw, {"a": b"1"}, {"a": DONE, "b": FAILED}) == (b"", True)


def test_resolve_args_skip_wins_over_resolution_errors() -> None:
    raw = enc([make_ref("pending"), make_ref("failed")])
    got = resolve_args(raw, {}, {"pending": StepStatus.PENDING, "failed": FAILED})
    assert got == (b"", True)


def test_resolve_args_empty_result_is_null() -> None:
    """A legacy zero-byte result (Go error-only handler) resolves to JSON null."""
    assert resolve_args(enc([make_ref("a")]), {"a": b""}, {"a": DONE}) == (b"[null]", False)


def test_resolve_args_literal_containing_marker_string_is_kept() -> None:
    raw = b'["__ebind_ref__",{"__ebind_ref__":1}]'
    assert resolve_args(raw, {}, {}) == (raw, False)


def test_resolve_args_malformed_ref_errors() -> None:
    raw = b'[{"__ebind_ref__":"__ebind_ref__","step_id":"a","mode":"bogus"}]'
    with pytest.raises(ResolveError, match="step 's': malformed placeholder"):
        resolve_args(raw, {}, {"a": DONE}, step_id="s")


@pytest.mark.parametrize("raw", [b'{"a":1}', b"nope", b"5"])
def test_resolve_args_rejects_non_array(raw: bytes) -> None:
    with pytest.raises(ResolveError, match="args must be a JSON array"):
        resolve_args(raw, {}, {})


# --- resolve_args: signals ----------------------------------------------------------------


def test_resolve_args_substitutes_signal_payload() -> None:
    raw = enc([signal_ref("go"), 1])
    got = resolve_args(raw, {}, {}, {"go": signal("go", b'{"ok":true}')})
    assert got == (b'[{"ok":true},1]', False)


def test_resolve_args_signal_without_payload_is_null() -> None:
    raw = enc([signal_ref("go")])
    assert resolve_args(raw, {}, {}, {"go": signal("go")}) == (b"[null]", False)
    assert resolve_args(raw, {}, {}, {"go": signal("go", b"")}) == (b"[null]", False)


@pytest.mark.parametrize("signals", [None, {}])
def test_resolve_args_undelivered_signal_errors(signals: dict[str, object] | None) -> None:
    with pytest.raises(ResolveError, match="step 'w': signal 'go' not delivered"):
        resolve_args(enc([signal_ref("go")]), {}, {}, signals, step_id="w")  # type: ignore[arg-type]


def test_resolve_args_signal_nested_in_dict_and_mixed_with_refs() -> None:
    raw = enc([{"approval": signal_ref("ok"), "data": make_ref("a")}])
    got, _ = resolve_args(raw, {"a": b"[1]"}, {"a": DONE}, {"ok": signal("ok", b'"yes"')})
    assert msgspec.json.decode(got) == [{"approval": "yes", "data": [1]}]


def test_resolve_args_is_deterministic() -> None:
    raw = enc([{"b": make_ref("a"), "a": 1}])
    outs = {resolve_args(raw, {"a": b"2"}, {"a": DONE}) for _ in range(5)}
    assert outs == {(b'[{"b":2,"a":1}]', False)}
