"""extract_texts / replace_texts: every text of a request body, by path, and rewriting them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.detect import TextPathError, extract_texts, replace_texts

BODY: dict[str, Any] = {
    "model": "m",
    "messages": [
        {"role": "system", "content": "sys"},
        {"role": "user", "name": "alice", "content": [{"type": "text", "text": "part"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"q": "x", "n": ["y"]}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "result"},
        {"role": "assistant", "function_call": {"name": "old", "arguments": "not json"}},
        {"role": "developer", "content": "dev"},
    ],
}


def test_extract_texts_finds_every_surface() -> None:
    """Every message content, content part, name, tool-call id/name/arguments (raw, and decoded
    keys and values by position), tool_call_id and legacy function_call is extracted with its
    path."""
    paths = {ref.path: ref.text for ref in extract_texts(BODY)}
    assert paths == {
        "messages[0].content": "sys",
        "messages[1].content[0].text": "part",
        "messages[1].name": "alice",
        "messages[2].tool_calls[0].id": "c1",
        "messages[2].tool_calls[0].function.name": "lookup",
        "messages[2].tool_calls[0].function.arguments": '{"q": "x", "n": ["y"]}',
        "messages[2].tool_calls[0].function.arguments#<0>": "q",
        "messages[2].tool_calls[0].function.arguments#{0}": "x",
        "messages[2].tool_calls[0].function.arguments#<1>": "n",
        "messages[2].tool_calls[0].function.arguments#{1}[0]": "y",
        "messages[3].content": "result",
        "messages[3].tool_call_id": "c1",
        "messages[4].function_call.name": "old",
        "messages[4].function_call.arguments": "not json",
        "messages[5].content": "dev",
    }


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [("hello", {"prompt": "hello"}), (["a", "b"], {"prompt[0]": "a", "prompt[1]": "b"})],
    ids=["string", "list"],
)
def test_extract_texts_legacy_prompt(prompt: object, expected: dict[str, str]) -> None:
    """A completions ``prompt`` is extracted as ``prompt`` or ``prompt[i]``."""
    assert {r.path: r.text for r in extract_texts({"prompt": prompt})} == expected


def test_replace_texts_rewrites_copy_only() -> None:
    """replace_texts returns a deep copy with the named texts replaced; the input is unchanged."""
    out = replace_texts(BODY, {"messages[0].content": "S", "messages[1].content[0].text": "P"})
    assert out["messages"][0]["content"] == "S"
    assert out["messages"][1]["content"][0]["text"] == "P"
    assert BODY["messages"][0]["content"] == "sys"


def test_replace_texts_decoded_argument_keeps_json() -> None:
    """Replacing a decoded argument value re-encodes the arguments as valid JSON."""
    out = replace_texts(BODY, {"messages[2].tool_calls[0].function.arguments#{1}[0]": 'z"q'})
    args = json.loads(out["messages"][2]["tool_calls"][0]["function"]["arguments"])
    assert args == {"q": "x", "n": ['z"q']}


@pytest.mark.parametrize(
    "path",
    [
        "messages[9].content",
        "messages[0].nope",
        "messages[2].content",
        "messages[2].tool_calls[0].function.arguments#{7}",
        "messages[4].function_call.arguments#{0}",
        "messages[",
    ],
    ids=["index", "key", "not-a-string", "bad-pointer", "not-json", "malformed"],
)
def test_replace_texts_rejects_bad_paths(path: str) -> None:
    """A path that names no text is a TextPathError, never a silent no-op."""
    with pytest.raises(TextPathError):
        replace_texts(BODY, {path: "x"})


def test_replace_texts_rejects_raw_and_decoded_together() -> None:
    """Giving both the raw arguments and a decoded value of them is ambiguous and refused."""
    head = "messages[2].tool_calls[0].function.arguments"
    with pytest.raises(TextPathError, match="both"):
        replace_texts(BODY, {head: "{}", f"{head}#{{0}}": "y"})
