"""codec: binding, validation and encoding of arguments; worker-side decoding and results."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
import sig_samples as s

from ebind.codec import (
    ArgumentError,
    decode_args,
    decode_result,
    encode_args,
    encode_raw_args,
    encode_result,
)
from ebind.errors import InvalidArguments
from ebind.signature import inspect_handler

RESIZE = inspect_handler(s.resize, name="img.resize")
MIXED = inspect_handler(s.mixed, name="mixed")
FETCH = inspect_handler(s.fetch_user)
LOOSE = inspect_handler(s.no_annotations, name="loose")


def test_positional_and_default_are_encoded() -> None:
    assert encode_args(RESIZE, ("img1",), {}) == b'["img1",800]'


def test_keywords_are_bound_to_positions() -> None:
    assert encode_args(RESIZE, (), {"width": 10, "image_id": "a"}) == b'["a",10]'


def test_structs_dataclasses_typeddicts_round_trip() -> None:
    args = (s.User(id="u", age=3), s.Point(1, 2), {"verbose": True}, ["a"])
    payload = encode_args(MIXED, args, {"maybe": None})
    decoded = decode_args(MIXED, payload)
    assert decoded == [s.User(id="u", age=3), s.Point(1, 2), {"verbose": True}, ["a"], None, None]


def test_too_many_positional_arguments() -> None:
    with pytest.raises(InvalidArguments, match=r"takes \(image_id, width=800\).*at most 2.*got 3"):
        encode_args(RESIZE, ("a", 1, 2), {})


def test_missing_required_argument() -> None:
    with pytest.raises(InvalidArguments, match=r"missing required argument.*'image_id'") as info:
        encode_args(RESIZE, (), {"width": 3})
    assert info.value.parameter == "image_id" and info.value.task_name == "img.resize"


def test_unknown_keyword_suggests_the_close_name() -> None:
    with pytest.raises(
        InvalidArguments, match=r"unknown keyword argument 'widht'; did you mean 'width'"
    ):
        encode_args(RESIZE, ("a",), {"widht": 3})


def test_multiple_values_for_an_argument() -> None:
    with pytest.raises(InvalidArguments, match=r"multiple values for argument 'image_id'"):
        encode_args(RESIZE, ("a",), {"image_id": "b"})


def test_wrong_type_names_task_parameter_and_value() -> None:
    with pytest.raises(
        InvalidArguments, match=r"task 'img.resize': argument 'width' expects int, got 'x'"
    ):
        encode_args(RESIZE, ("a", "x"), {})


def test_wrong_struct_field_type_is_caught() -> None:
    with pytest.raises(InvalidArguments, match=r"argument 'u' expects User.*\$\.age"):
        encode_args(MIXED, ({"id": "u", "age": "old"}, s.Point(1, 2), {"verbose": True}, []), {})


def test_list_element_type_is_caught() -> None:
    with pytest.raises(InvalidArguments, match=r"argument 'tags' expects list\[str\]"):
        encode_args(MIXED, (s.User(id="u"), s.Point(1, 2), {"verbose": True}, [1]), {})


def test_optional_accepts_none_and_int() -> None:
    base = (s.User(id="u"), s.Point(1, 2), {"verbose": True}, [])
    encode_args(MIXED, base, {"maybe": 3})
    with pytest.raises(InvalidArguments, match=r"argument 'maybe' expects"):
        encode_args(MIXED, base, {"maybe": "3"})


def test_unencodable_value_is_rejected() -> None:
    with pytest.raises(InvalidArguments, match=r"argument 'a' = <object.*cannot be encoded"):
        encode_args(LOOSE, (object(),), {})


def test_int_is_not_accepted_for_str() -> None:
    with pytest.raises(InvalidArguments, match=r"argument 'user_id' expects str, got 5"):
        encode_args(FETCH, (5,), {})


def test_raw_args_for_unknown_tasks() -> None:
    assert encode_raw_args("x.y", (1, "a")) == b'[1,"a"]'
    with pytest.raises(InvalidArguments, match=r"task 'x.y': arguments cannot be encoded"):
        encode_raw_args("x.y", (object(),))


@pytest.mark.parametrize("payload", [b"", b"null", b" null "])
def test_empty_payload_means_no_arguments(payload: bytes) -> None:
    with pytest.raises(ArgumentError, match=r"expects 1 argument") as info:
        decode_args(FETCH, payload)
    assert info.value.kind == "arg_count"


def test_decode_fills_defaults_for_short_payloads() -> None:
    assert decode_args(RESIZE, b'["a"]') == ["a", 800]


def test_decode_accepts_msgspec_raw() -> None:
    assert decode_args(RESIZE, msgspec.Raw(b'["a",1]')) == ["a", 1]


@pytest.mark.parametrize(
    ("payload", "kind", "match"),
    [
        (b"\x00garbage", "decode", "payload is not a JSON array"),
        (b'{"a":1}', "decode", "payload is not a JSON array"),
        (b"[1,", "decode", "payload is not a JSON array"),
        (b"[]", "arg_count", r"expects 2 argument\(s\) \(image_id, width=800\), got 0"),
        (b'["a",1,2]', "arg_count", "got 3"),
        (b"[1]", "arg_type", r"argument 0 'image_id' \(str\): Expected `str`, got `int`"),
        (b'["a","b"]', "arg_type", "argument 1 'width'"),
    ],
)
def test_bad_payloads_fail_with_a_kind(payload: bytes, kind: str, match: str) -> None:
    with pytest.raises(ArgumentError, match=match) as info:
        decode_args(RESIZE, payload)
    assert info.value.kind == kind


def test_deeply_nested_payload_is_a_decode_error_not_a_crash() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(ArgumentError) as info:
        decode_args(LOOSE, b"[" + deep + b"]")
    assert info.value.kind == "decode"


def test_encode_result_and_decode_result_round_trip() -> None:
    raw = encode_result(FETCH, s.User(id="u", age=2))
    assert decode_result(s.User, raw) == s.User(id="u", age=2)
    assert decode_result(Any, raw) == {"id": "u", "age": 2}
    assert decode_result(Any, None) is None
    assert decode_result(type(None), b"null") is None


def test_unencodable_result_is_an_encode_error() -> None:
    with pytest.raises(ArgumentError, match=r"eturned <object.*cannot be encoded as JSON") as info:
        encode_result(FETCH, object())
    assert info.value.kind == "encode"


def test_decode_result_type_mismatch_raises_validation_error() -> None:
    with pytest.raises(msgspec.ValidationError):
        decode_result(int, b'"x"')
