"""The conversation rules training and serving share: role order and how a tool call is read."""

from __future__ import annotations

import pytest

from lmforge.conversation import Conversation, Message, ToolCall, role_order_error, tool_call_from_dict

CALL = ToolCall("get_weather", {"city": "Paris"})


def conversation(*roles: str) -> list[Message]:
    """Messages in these roles; "call" is an assistant message that calls a tool."""
    by_role: dict[str, Message] = {
        "user": Message("user", "x"),
        "assistant": Message("assistant", "x"),
        "tool": Message("tool", "x"),
        "call": Message("assistant", "", tool_calls=[CALL]),
    }
    return [by_role[role] for role in roles]


@pytest.mark.parametrize(
    ("roles", "expected"),
    [
        (("user", "assistant", "user", "assistant"), None),
        (("user", "call", "tool", "tool", "assistant"), None),
        (("assistant",), (0, "the conversation must start with a user message")),
        (("tool",), (0, "the conversation must start with a user message")),
        (("user", "assistant", "assistant"), (2, "an assistant message must follow a user or tool message")),
        (
            ("user", "assistant", "tool"),
            (2, "a tool message must follow an assistant message with tool_calls"),
        ),
        (("user", "user", "assistant"), None),  # a request may hold two user messages in a row
    ],
)
def test_role_order(roles: tuple[str, ...], expected: tuple[int, str] | None) -> None:
    assert role_order_error(conversation(*roles)) == expected


def test_training_samples_also_alternate_users_and_replies() -> None:
    assert role_order_error(conversation("user", "user", "assistant"), users_alternate=True) == (
        1,
        "a user message must follow an assistant message",
    )
    assert role_order_error(conversation("user", "call", "tool", "user"), users_alternate=True) == (
        3,
        "a user message must follow an assistant message",
    )


@pytest.mark.parametrize(
    "raw",
    [
        {
            "id": "c1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
        },
        {"id": "c1", "name": "get_weather", "arguments": {"city": "Paris"}},
    ],
)
def test_a_tool_call_is_read_from_both_shapes(raw: dict) -> None:
    assert tool_call_from_dict(raw) == ToolCall("get_weather", {"city": "Paris"}, id="c1")


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        ("get_weather", "each tool call must be an object"),
        ({"arguments": {}}, "a tool call has no function name"),
        ({"name": "f", "arguments": "{not json"}, "tool call arguments are not valid JSON"),
        ({"name": "f", "arguments": "[1]"}, "tool call arguments must be a JSON object"),
    ],
)
def test_a_malformed_tool_call_says_what_is_wrong(raw: object, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        tool_call_from_dict(raw)
    # an OpenAI request names the message
    with pytest.raises(ValueError, match=f"message 1: {error}"):
        Conversation.from_openai(
            {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "tool_calls": [raw]}]}
        )


def test_empty_arguments_are_no_arguments() -> None:
    assert tool_call_from_dict({"name": "f", "arguments": ""}).arguments == {}
