from __future__ import annotations

from typing import Any

import pytest

from serve_app.errors import InvalidRequestError, UnsupportedParameterError
from serve_app.schemas import parse_request

USER = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("payload", "param", "fragment"),
    [
        ({"messages": USER}, "model", "Field required"),
        ({"model": "auto"}, "messages", "Field required"),
        ({"model": "auto", "messages": []}, "messages", "at least 1 item"),
        ({"model": 7, "messages": USER}, "model", "valid string"),
        (
            {"model": "auto", "messages": [{"role": "robot", "content": "x"}]},
            "messages.0.role",
            "Input should be",
        ),
        ({"model": "auto", "messages": [{"role": "user"}]}, "messages.0", "content is required"),
        ({"model": "auto", "messages": [{"role": "system", "content": "x"}]}, "messages", "role 'user'"),
        ({"model": "auto", "messages": USER, "temperature": 3}, "temperature", "less than or equal to 2"),
        ({"model": "auto", "messages": USER, "max_tokens": 0}, "max_tokens", "greater than or equal to 1"),
        ({"model": "auto", "messages": USER, "n": 2}, "n", "less than or equal to 1"),
        ({"model": "auto", "messages": USER, "stream": "yes"}, "stream", "valid boolean"),
        ({"model": "auto", "messages": USER, "frobnicate": 1}, "frobnicate", "Unrecognized request argument"),
    ],
)
def test_bad_requests_name_the_field(payload: dict[str, Any], param: str, fragment: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        parse_request(payload)
    assert info.value.http_status == 400
    assert info.value.param == param
    assert fragment in info.value.message


def test_not_an_object() -> None:
    with pytest.raises(InvalidRequestError, match="JSON object"):
        parse_request(["model"])


def test_unsupported_parameters_are_refused_not_dropped() -> None:
    with pytest.raises(UnsupportedParameterError) as info:
        parse_request({"model": "auto", "messages": USER, "logit_bias": {"50256": -100}})
    assert info.value.param == "logit_bias" and info.value.error_code == "unsupported_parameter"
    # response_format text is the default behaviour, so it is accepted
    assert parse_request({"model": "auto", "messages": USER, "response_format": {"type": "text"}})


def test_defaults_that_ask_nothing_are_accepted_as_if_absent() -> None:
    """What clients that pass every argument send: null for stream and n, and the unsupported
    parameters at values that ask for nothing; any other value of those is still refused."""
    neutral: dict[str, Any] = {
        "stream": None,
        "n": None,
        "logprobs": False,
        "top_logprobs": 0,
        "logit_bias": {},
        "functions": [],
        "modalities": ["text"],
        "audio": None,
    }
    chat = parse_request({"model": "auto", "messages": USER, **neutral})
    assert chat.stream is False and chat.n == 1
    assert chat.model_dump(exclude_none=True) == parse_request(
        {"model": "auto", "messages": USER}
    ).model_dump(exclude_none=True)
    for key, value in (
        ("logprobs", True),
        ("top_logprobs", 2),
        ("modalities", ["text", "audio"]),
        ("logit_bias", {"1": 1}),
    ):
        with pytest.raises(UnsupportedParameterError) as info:
            parse_request({"model": "auto", "messages": USER, key: value})
        assert info.value.param == key


def test_to_provider_request_maps_fields() -> None:
    chat = parse_request(
        {
            "model": "auto",
            "messages": [
                {"role": "developer", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": "last question"},
            ],
            "max_tokens": 10,
            "max_completion_tokens": 20,
            "stop": "END",
            "temperature": 0.5,
            "seed": 1,
        }
    )
    req = chat.to_provider_request("gpt-4.1")
    assert req.model == "gpt-4.1"
    assert [m.role for m in req.messages] == ["system", "user", "assistant", "user"]
    assert req.messages[1].content == "ab"
    assert req.max_tokens == 20  # max_completion_tokens wins
    assert req.stop == ["END"] and req.temperature == 0.5
    assert chat.routing_text() == "last question"


def test_seed_and_user_reach_the_provider_unless_dropped() -> None:
    chat = parse_request({"model": "auto", "messages": USER, "seed": 7, "user": "u-1"})
    assert chat.parameters_set() == {"seed", "user"}
    kept = chat.to_provider_request("m")
    assert kept.seed == 7 and kept.user == "u-1"
    dropped = chat.to_provider_request("m", frozenset({"user"}))
    assert dropped.seed == 7 and dropped.user is None


def test_penalties_reach_the_provider_unless_dropped_and_zero_is_none() -> None:
    chat = parse_request(
        {"model": "auto", "messages": USER, "presence_penalty": 1, "frequency_penalty": -0.5}
    )
    assert chat.parameters_set() == {"presence_penalty", "frequency_penalty"}
    kept = chat.to_provider_request("m")
    assert kept.presence_penalty == 1.0 and kept.frequency_penalty == -0.5
    dropped = chat.to_provider_request("m", frozenset({"presence_penalty"}))
    assert dropped.presence_penalty is None and dropped.frequency_penalty == -0.5
    zero = parse_request({"model": "auto", "messages": USER, "presence_penalty": 0, "frequency_penalty": 0.0})
    assert zero.parameters_set() == set() and zero.to_provider_request("m").presence_penalty is None
    for bad in (2.5, -3, "1", True):
        with pytest.raises(InvalidRequestError) as err:
            parse_request({"model": "auto", "messages": USER, "frequency_penalty": bad})
        assert err.value.param == "frequency_penalty"


def test_tool_turns_need_a_model_with_tools() -> None:
    history = [
        *USER,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ]
    chat = parse_request({"model": "auto", "messages": history})
    assert chat.needs() == {"tools"}
    [_, call_turn, result] = chat.to_provider_request("m").messages
    assert call_turn.tool_calls[0].name == "f" and result.name == "f" and result.tool_call_id == "c1"


def test_reasoning_effort_none_is_absent_and_the_others_reach_the_provider() -> None:
    none = parse_request({"model": "auto", "messages": USER, "reasoning_effort": "none"})
    assert none.reasoning_effort is None and none.to_provider_request("m").reasoning_effort is None
    for effort in ("minimal", "low", "medium", "high", "xhigh"):
        chat = parse_request({"model": "auto", "messages": USER, "reasoning_effort": effort})
        assert chat.to_provider_request("m").reasoning_effort == effort
        assert chat.to_provider_request("m", frozenset({"reasoning_effort"})).reasoning_effort is None
