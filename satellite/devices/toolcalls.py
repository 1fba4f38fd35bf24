"""Tool calls in the model's generated text, in LFM2's format and as JSON.

- LFM2: `<|tool_call_start|>[turn_on(entity="light.kitchen"), ...]<|tool_call_end|>`, a
  Python-style list of calls with keyword arguments. It is read with `ast` (never
  evaluated): only calls with literal keyword values are accepted.
- JSON: `{"name": "turn_on", "arguments": {"entity": "light.kitchen"}}` (or `parameters`), or
  a list of such objects, anywhere in the text (e.g. inside `<tool_call>...</tool_call>`).

A call becomes a `ToolCall(action, target, arguments)`: the function name is the action
(`turn_on`), unless it is a generic one (`control`, `call_service`, `device_control`), whose
`action` or `service` argument names it (`light.turn_on` -> `turn_on`). The target is the
`entity` / `entity_id` argument, or `name` (a spoken name, matched by the allowlist). Text
that holds no call gives no calls; a malformed call is reported in `problems`.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from typing import Any

LFM2_CALL = re.compile(r"<\|tool_call_start\|>(.*?)<\|tool_call_end\|>", re.DOTALL)
GENERIC = ("control", "call_service", "device_control")
MAX_TEXT = 20_000
"""Longer texts are cut before parsing (a reply is far shorter)."""


@dataclass(frozen=True)
class ToolCall:
    action: str
    target: str | None
    """Entity id or spoken name; None when the call names neither."""
    arguments: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    """The call as written, for events and logs."""


@dataclass(frozen=True)
class Parsed:
    calls: list[ToolCall]
    problems: list[str]
    spoken: str
    """The text without the tool-call markup (what the reply says)."""


def _call(name: str, arguments: dict[str, Any], source: str) -> ToolCall:
    args = dict(arguments)
    action = name
    if name in GENERIC:
        action = str(args.pop("action", None) or args.pop("service", None) or "")
    action = action.split(".")[-1].strip()
    target = args.pop("entity", None) or args.pop("entity_id", None) or args.pop("name", None)
    if isinstance(target, list) and len(target) == 1:
        target = target[0]
    return ToolCall(action, None if target is None else str(target), args, source[:200])


def _lfm2(body: str, problems: list[str]) -> list[ToolCall]:
    try:
        tree = ast.parse(body.strip(), mode="eval").body
    except SyntaxError:
        problems.append(f"a tool call is not readable: {body.strip()[:100]!r}")
        return []
    items = tree.elts if isinstance(tree, ast.List | ast.Tuple) else [tree]
    calls = []
    for item in items:
        if not (isinstance(item, ast.Call) and isinstance(item.func, ast.Name)):
            problems.append(f"not a function call: {ast.unparse(item)[:100]!r}")
            continue
        if item.args:
            problems.append(f"{item.func.id}: arguments must be named (key=value)")
            continue
        try:
            arguments = {kw.arg: ast.literal_eval(kw.value) for kw in item.keywords if kw.arg}
        except ValueError:
            problems.append(f"{item.func.id}: argument values must be literals")
            continue
        calls.append(_call(item.func.id, arguments, ast.unparse(item)))
    return calls


def _json_calls(text: str, problems: list[str]) -> list[ToolCall]:
    decoder = json.JSONDecoder()
    calls = []
    index = 0
    while (start := _next_json(text, index)) != -1:
        try:
            value, end = decoder.raw_decode(text, start)
        except ValueError:
            index = start + 1
            continue
        index = end
        for item in value if isinstance(value, list) else [value]:
            if not (isinstance(item, dict) and isinstance(item.get("name"), str)):
                continue
            arguments = item.get("arguments", item.get("parameters", {}))
            if isinstance(arguments, str):
                try:
                    arguments = json.loads(arguments)
                except ValueError:
                    arguments = None
            if not isinstance(arguments, dict):
                problems.append(f"{item['name']}: its arguments are not an object")
                continue
            calls.append(_call(item["name"], arguments, text[start:end]))
    return calls


def _next_json(text: str, index: int) -> int:
    positions = [p for p in (text.find("{", index), text.find("[{", index)) if p != -1]
    return min(positions) if positions else -1


def parse_tool_calls(text: str) -> Parsed:
    """Every tool call in `text` (see the module docstring)."""
    text = text[:MAX_TEXT]
    problems: list[str] = []
    calls: list[ToolCall] = []
    for match in LFM2_CALL.finditer(text):
        calls += _lfm2(match.group(1), problems)
    rest = LFM2_CALL.sub(" ", text)
    if not calls:
        calls = _json_calls(rest, problems)
        if calls:
            rest = re.sub(r"<tool_call>.*?</tool_call>", " ", rest, flags=re.DOTALL)
            for call in calls:
                rest = rest.replace(call.source, " ")
    spoken = " ".join(rest.replace("<|tool_call_start|>", " ").split())
    return Parsed(calls, problems, spoken)
