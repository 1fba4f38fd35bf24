"""Device control from the model's replies: the allowlist, the checks, and confirmations.

The allowlist (`device_control.allowlist_file`) is a YAML file:

    entities:
      light.kitchen:
        name: kitchen light            # how people say it (optional)
        command_topic: zigbee2mqtt/kitchen_light/set
        actions:                       # action -> the payload published for it
          turn_on: '{"state": "ON"}'
          turn_off: '{"state": "OFF"}'
      lock.front_door:
        name: front door
        command_topic: home/front_door/set
        actions: {lock: LOCK, unlock: UNLOCK}
        # sensitive: true              # the default for locks, alarm panels, garage/door covers

`DeviceController.handle(text)` reads the tool calls in a reply (`toolcalls`) and, for each:

- on the allowlist and not sensitive: published to its command topic at once
  (`command_sent` event); the satellite says it is done;
- sensitive (lock, alarm_control_panel, a cover that is a garage door, door or gate, or
  `sensitive: true`): held until a spoken yes (`confirm`) within `confirm_seconds`
  (`confirmation_requested` event); the satellite asks;
- anything else (unknown entity, action not listed, unreadable call): refused and reported
  (`command_refused` event, with the reason); the satellite says it may not.

Each outcome carries the sentence to speak.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from satellite.devices.toolcalls import ToolCall, parse_tool_calls
from satellite.errors import UserError

SENSITIVE_DOMAINS = ("lock", "alarm_control_panel")
SENSITIVE_COVERS = ("garage", "door", "gate")
YES = ("yes", "yeah", "yep", "sure", "confirm", "confirmed", "do it", "go ahead", "please do")
MAX_ENTITIES = 1000

Publish = Callable[[str, str], None]
Event = Callable[..., None]


class AllowlistError(UserError):
    """The allowlist file cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class Entity:
    entity_id: str
    name: str
    command_topic: str
    actions: dict[str, str]
    sensitive: bool

    @property
    def domain(self) -> str:
        return self.entity_id.split(".", 1)[0]


@dataclass(frozen=True)
class Outcome:
    kind: Literal["sent", "refused", "confirm", "confirmed", "cancelled", "expired"]
    say: str
    """The sentence the satellite speaks."""
    call: ToolCall | None = None
    entity: Entity | None = None
    reason: str = ""


def _is_sensitive(entity_id: str, spec: dict[str, Any]) -> bool:
    if "sensitive" in spec:
        return bool(spec["sensitive"])
    domain, _, rest = entity_id.partition(".")
    if domain in SENSITIVE_DOMAINS:
        return True
    if domain == "cover":
        words = f"{rest} {spec.get('name', '')} {spec.get('device_class', '')}".lower()
        return any(word in words for word in SENSITIVE_COVERS)
    return False


def load_allowlist(path: Path) -> dict[str, Entity]:
    """The allowlist file -> entities by id; AllowlistError naming the file and key."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise AllowlistError(
            f"device_control.allowlist_file: {path}: {err.strerror or err}"
        ) from None
    except yaml.YAMLError as err:
        raise AllowlistError(f"{path}: not valid YAML: {err}") from None
    entities = data.get("entities") if isinstance(data, dict) else None
    if not isinstance(entities, dict) or not entities:
        raise AllowlistError(f"{path}: entities: expected a mapping of entity ids")
    if len(entities) > MAX_ENTITIES:
        raise AllowlistError(f"{path}: entities: more than {MAX_ENTITIES}")
    out: dict[str, Entity] = {}
    for entity_id, spec in entities.items():
        key = f"{path}: entities.{entity_id}"
        if not isinstance(entity_id, str) or not re.fullmatch(r"[a-z_]+\.[a-z0-9_]+", entity_id):
            raise AllowlistError(f"{key}: not an entity id like light.kitchen")
        if not isinstance(spec, dict):
            raise AllowlistError(f"{key}: expected a mapping")
        unknown = set(spec) - {"name", "command_topic", "actions", "sensitive", "device_class"}
        if unknown:
            raise AllowlistError(f"{key}: unknown key {sorted(unknown)[0]!r}")
        topic = spec.get("command_topic")
        if not isinstance(topic, str) or not topic or any(c in topic for c in "+#"):
            raise AllowlistError(f"{key}.command_topic: expected a topic without wildcards")
        actions = spec.get("actions")
        if not isinstance(actions, dict) or not actions:
            raise AllowlistError(f"{key}.actions: expected a mapping of action -> payload")
        for action, payload in actions.items():
            if not isinstance(payload, str | int | float) or isinstance(payload, bool):
                raise AllowlistError(f"{key}.actions.{action}: the payload must be a string")
        name = spec.get("name", entity_id.split(".", 1)[1].replace("_", " "))
        out[entity_id] = Entity(
            entity_id, str(name), topic, {str(a): str(p) for a, p in actions.items()},
            _is_sensitive(entity_id, spec),
        )  # fmt: skip
    return out


def tool_list(entities: dict[str, Entity]) -> str:
    """The tools as LFM2's system prompt lists them (JSON), one function per action."""

    actions = sorted({a for e in entities.values() for a in e.actions})
    tools = [
        {
            "name": action,
            "description": f"{action.replace('_', ' ')} a device",
            "parameters": {
                "type": "object",
                "properties": {
                    "entity": {
                        "type": "string",
                        "enum": sorted(
                            e.entity_id for e in entities.values() if action in e.actions
                        ),
                    }
                },
                "required": ["entity"],
            },
        }
        for action in actions
    ]
    return f"List of tools: <|tool_list_start|>{json.dumps(tools)}<|tool_list_end|>"


def _words(action: str) -> str:
    return action.replace("_", " ")


@dataclass
class Pending:
    call: ToolCall
    entity: Entity
    deadline: float


@dataclass
class DeviceController:
    entities: dict[str, Entity]
    publish: Publish
    event: Event
    confirm_seconds: float = 15.0
    pending: list[Pending] = field(default_factory=list)

    def find(self, target: str | None) -> Entity | None:
        if target is None:
            return None
        key = target.strip().lower()
        for entity in self.entities.values():
            if key in (entity.entity_id, entity.name.lower()):
                return entity
        return None

    def handle(self, text: str) -> list[Outcome]:
        """The tool calls in a reply's text -> what was done, one outcome per call."""
        parsed = parse_tool_calls(text)
        outcomes = [self._refuse(None, None, problem) for problem in parsed.problems]
        for call in parsed.calls:
            outcomes.append(self._one(call))
        return outcomes

    def _one(self, call: ToolCall) -> Outcome:
        entity = self.find(call.target)
        if entity is None:
            why = "it names no device" if call.target is None else f"{call.target} is not allowed"
            return self._refuse(call, None, why)
        if call.action not in entity.actions:
            return self._refuse(
                call, entity, f"{call.action} is not allowed for {entity.entity_id}"
            )
        if entity.sensitive:
            self.pending.append(Pending(call, entity, time.monotonic() + self.confirm_seconds))
            self.event("confirmation_requested", entity=entity.entity_id, action=call.action)
            return Outcome(
                "confirm",
                f"Do you really want to {_words(call.action)} the {entity.name}? Say yes to confirm.",
                call, entity,
            )  # fmt: skip
        self._send(call, entity)
        return Outcome("sent", f"Done: {_words(call.action)} the {entity.name}.", call, entity)

    def _send(self, call: ToolCall, entity: Entity) -> None:
        self.publish(entity.command_topic, entity.actions[call.action])
        self.event("command_sent", entity=entity.entity_id, action=call.action,
                   topic=entity.command_topic)  # fmt: skip

    def _refuse(self, call: ToolCall | None, entity: Entity | None, reason: str) -> Outcome:
        self.event("command_refused", reason=reason, call=call.source if call else None)
        what = f"{_words(call.action)} {call.target}" if call and call.target else "do that"
        return Outcome("refused", f"Sorry, I am not allowed to {what}.", call, entity, reason)

    @property
    def waiting(self) -> bool:
        self._expire()
        return bool(self.pending)

    def _expire(self) -> list[Outcome]:
        now = time.monotonic()
        gone = [p for p in self.pending if p.deadline < now]
        self.pending = [p for p in self.pending if p.deadline >= now]
        for p in gone:
            self.event("command_refused", reason="no confirmation in time", call=p.call.source)
        return [
            Outcome(
                "expired",
                f"I did not hear a yes, so I will not {_words(p.call.action)} the {p.entity.name}.",
                p.call,
                p.entity,
                "no confirmation in time",
            )
            for p in gone
        ]

    def confirm(self, answer: str) -> list[Outcome]:
        """The user's spoken answer to the pending questions: yes sends them, anything else
        cancels them."""
        outcomes = self._expire()
        words = " ".join(re.findall(r"[a-z']+", answer.lower()))
        yes = any(words == y or words.startswith(y + " ") for y in YES)
        for p in self.pending:
            if yes:
                self._send(p.call, p.entity)
                say = f"Done: {_words(p.call.action)} the {p.entity.name}."
                outcomes.append(Outcome("confirmed", say, p.call, p.entity))
            else:
                self.event("command_refused", reason="not confirmed", call=p.call.source)
                say = f"OK, I will not {_words(p.call.action)} the {p.entity.name}."
                outcomes.append(Outcome("cancelled", say, p.call, p.entity, "not confirmed"))
        self.pending = []
        return outcomes
