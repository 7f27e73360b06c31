"""Our chat turns and tools in the Anthropic messages API's shape."""

from __future__ import annotations

from deployments.providers import anthropic_messages as wire
from deployments.providers.base import ChatMessage, ImagePart, ProviderRequest, ResponseFormat, Tool, ToolCall

CALLS = (ToolCall("call_1", "get_weather", '{"city": "Paris"}'), ToolCall("call_2", "get_time", "{}"))


def test_tool_calls_and_results_become_blocks_in_alternating_turns() -> None:
    turns = wire.messages(
        [
            ChatMessage("user", "weather and time?"),
            ChatMessage("assistant", "", tool_calls=CALLS),
            ChatMessage("tool", '{"temp": 21}', tool_call_id="call_1"),
            ChatMessage("tool", "14:05", tool_call_id="call_2"),
            ChatMessage("user", "thanks"),
        ]
    )
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert turns[1]["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {}},
    ]
    results = turns[2]["content"]
    assert [b["type"] for b in results] == ["tool_result", "tool_result", "text"]  # results first
    assert results[0] == {"type": "tool_result", "tool_use_id": "call_1", "content": '{"temp": 21}'}


def test_arguments_that_are_not_strict_json_are_kept_whole() -> None:
    """NaN and infinities parse in Python but no SDK sends them (it raised ValueError): kept as text."""
    from deployments.providers.base import parse_arguments

    assert parse_arguments('{"x": 1.5, "y": [2e3]}') == {"x": 1.5, "y": [2000.0]}
    for text in ("Infinity", '{"x": NaN}', "1e400", "(", "-Infinity"):
        assert parse_arguments(text) == {"_raw": text}
    assert parse_arguments("[1, 2]") == {"value": [1, 2]} and parse_arguments("") == {}


def test_images_become_image_blocks() -> None:
    image_turn = ChatMessage(
        "user",
        "what is this?",
        images=(ImagePart(media_type="image/png", data="AAAA"), ImagePart(url="https://x/y.png")),
    )
    [turn] = wire.messages([image_turn])
    assert turn["content"][0] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"},
    }
    assert turn["content"][1] == {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}
    assert turn["content"][2] == {"type": "text", "text": "what is this?"}


def _req(**kw: object) -> ProviderRequest:
    tools = (Tool("get_weather", "weather", {"type": "object"}), Tool("get_time", None, {"type": "object"}))
    return ProviderRequest("claude-sonnet-4-5", [ChatMessage("user", "x")], tools=tools, **kw)  # type: ignore[arg-type]


def test_tool_choice_mapping() -> None:
    assert wire.tool_params(_req())["tool_choice"] == {"type": "auto"}
    assert wire.tool_params(_req(tool_choice="required"))["tool_choice"] == {"type": "any"}
    assert wire.tool_params(_req(tool_choice="none"))["tool_choice"] == {"type": "none"}
    named = wire.tool_params(_req(tool_choice="required", tool_choice_function="get_time"))
    assert named["tool_choice"] == {"type": "tool", "name": "get_time"}
    serial = wire.tool_params(_req(parallel_tool_calls=False))
    assert serial["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    assert [t["input_schema"] for t in serial["tools"]] == [{"type": "object"}, {"type": "object"}]
    assert wire.tool_params(ProviderRequest("m", [ChatMessage("user", "x")])) == {}


def test_structured_output_is_one_forced_tool() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    req = ProviderRequest(
        "m", [ChatMessage("user", "x")], response_format=ResponseFormat("json_schema", schema, "thing")
    )
    params = wire.tool_params(req)
    assert params["tools"][0]["input_schema"] == schema
    assert params["tool_choice"] == {"type": "tool", "name": wire.FORMAT_TOOL}
