"""The safety policy: the rules a reply's text must pass, where they come from, and what they
have blocked.

Rules come from the config (`safety.blocked_terms`, one `terms` rule named `blocked_terms`)
and from the policy file (`safety.policy_file`), a YAML list under `rules:`, each item a
`name` and one of:

    terms: [word, "a phrase"]          # whole words, any case
    regex: "pattern"                   # Python re, case-insensitive
    personal_data: [phone, email, card, address]
    locale: en_US                      # with personal_data: en_US, en_GB, de_DE
    allow_topics: {lights: [light, lamp], weather: [weather, rain]}
    command: [/usr/local/bin/classify, --fast]   # an external judge (see below)
    plugin: my_package.rules:Classifier          # a Python judge: module:attribute, or the
                                                 # name of an `lfm_satellite.policies` entry point
    timeout: 0.5                       # with command or plugin: seconds it may take

An external judge decides on the text so far. `command` gets `{"text": ..., "final": ...}` as
JSON on standard input and answers by its exit status: 0 passes, 1 blocks (its first line of
output is the reason), 2 holds (ask again with more text). `plugin` is called once with the
rule's other keys as keyword arguments and must return an object whose `check(text, final)`
returns None or "pass", "hold", or any other string to block with that reason. Either one
failing, answering otherwise, or taking longer than its timeout blocks the reply (fails
closed) with a log line naming it.

`Policy.reload_if_changed()` reads the policy file again when it has changed (the daemon asks
at the start of each reply); a file that no longer loads keeps the rules in force and says
why in the log.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import yaml

from satellite.errors import UserError
from satellite.safety import personal
from satellite.safety.rules import (
    EXCERPT_CHARS,
    Finding,
    PersonalDataRule,
    RegexRule,
    Rule,
    TermsRule,
    TopicsRule,
)

_LOG = logging.getLogger("satellite.safety")

ENTRY_POINT_GROUP = "lfm_satellite.policies"
DEFAULT_TIMEOUT = 0.5
"""Seconds an external judge may take when its rule names no timeout."""
TYPE_KEYS = ("terms", "regex", "personal_data", "allow_topics", "command", "plugin")


class PolicyError(UserError):
    """A policy file or rule that cannot be used; the message names the file and the key."""

    exit_code = 2


class ExternalRule:
    """A rule decided outside the satellite's own code: an external command or a plugin,
    within a time limit, failing closed."""

    def __init__(self, name: str, timeout: float) -> None:
        self.name = name
        self.timeout = timeout

    async def judge(self, text: str, final: bool) -> Finding | None:
        try:
            answer = await asyncio.wait_for(self._ask(text, final), self.timeout)
        except TimeoutError:
            return self._failed(f"took longer than {self.timeout:g} s")
        except Exception as err:  # a judge's failure of any kind fails closed
            return self._failed(f"{type(err).__name__}: {err}")
        return self._finding(answer, text)

    async def _ask(self, text: str, final: bool) -> str | None:
        raise NotImplementedError

    def _finding(self, answer: str | None, text: str) -> Finding | None:
        if answer is None or answer == "pass":
            return None
        if answer == "hold":
            return Finding(self.name, "hold")
        return Finding(self.name, "block", f"{answer[:EXCERPT_CHARS]}")

    def _failed(self, why: str) -> Finding:
        _LOG.error(
            "safety: rule %r failed (%s); the reply is blocked (fail closed)", self.name, why
        )
        return Finding(self.name, "block", f"rule failed: {why}"[:EXCERPT_CHARS])


class CommandRule(ExternalRule):
    def __init__(self, name: str, argv: Sequence[str], timeout: float) -> None:
        super().__init__(name, timeout)
        self.argv = list(argv)

    async def _ask(self, text: str, final: bool) -> str | None:
        process = await asyncio.create_subprocess_exec(
            *self.argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            out, _ = await process.communicate(json.dumps({"text": text, "final": final}).encode())
        except asyncio.CancelledError:
            process.kill()
            await process.wait()
            raise
        code = process.returncode
        if code == 0:
            return None
        if code == 2:
            return "hold"
        if code == 1:
            reason = out.decode(errors="replace").strip().splitlines()
            return reason[0] if reason else "blocked by the command"
        raise RuntimeError(f"{self.argv[0]} exited {code}")


class PluginRule(ExternalRule):
    def __init__(self, name: str, judge: Any, timeout: float) -> None:
        super().__init__(name, timeout)
        self.plugin = judge

    async def _ask(self, text: str, final: bool) -> str | None:
        answer = await asyncio.to_thread(self.plugin.check, text, final)
        if answer is not None and not isinstance(answer, str):
            raise TypeError(f"check() returned {type(answer).__name__}, not a string or None")
        return answer


AnyRule = Rule | ExternalRule


@dataclass
class Policy:
    """The rules in force and what each has blocked since start."""

    rules: list[AnyRule] = field(default_factory=list)
    enabled: bool = True
    file: Path | None = None
    blocks: Counter[str] = field(default_factory=Counter)
    """Replies (and texts to speak) blocked, by rule name."""
    _stamp: tuple[int, int] | None = None

    @property
    def local_rules(self) -> list[Rule]:
        return [r for r in self.rules if not isinstance(r, ExternalRule)]

    @property
    def external_rules(self) -> list[ExternalRule]:
        return [r for r in self.rules if isinstance(r, ExternalRule)]

    def check_local(self, text: str, final: bool) -> Finding | None:
        """The first block among the built-in rules, else the first hold, else None."""
        if not self.enabled:
            return None
        hold = None
        for rule in self.local_rules:
            found = rule.check(text, final)
            if found is not None and found.verdict == "block":
                return found
            hold = hold or found
        return hold

    async def check(self, text: str, final: bool = True) -> Finding | None:
        """Every rule, external ones included (a whole text: `lfm-satellite safety check`,
        text to speak)."""
        found = self.check_local(text, final)
        if (found is not None and found.verdict == "block") or not self.enabled:
            return found
        for rule in self.external_rules:
            verdict = await rule.judge(text, final)
            if verdict is not None and (verdict.verdict == "block" or found is None):
                found = verdict
                if verdict.verdict == "block":
                    break
        return found

    def count(self, finding: Finding) -> None:
        self.blocks[finding.rule] += 1

    def reload_if_changed(self) -> bool:
        """Read the policy file again if it changed since it was read; True if it did."""
        if self.file is None:
            return False
        stamp = _stamp(self.file)
        if stamp == self._stamp:
            return False
        try:
            rules = load_policy_file(self.file)
        except PolicyError as err:
            self._stamp = stamp  # say it once per change
            _LOG.error("safety: %s; the rules in force stay", err)
            return False
        self.rules = [r for r in self.rules if r.name == "blocked_terms"] + rules
        self._stamp = stamp
        _LOG.info("safety: policy %s loaded (%d rules)", self.file, len(rules))
        return True


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


def build_policy(
    blocked_terms: Sequence[str], policy_file: str | None, enabled: bool = True
) -> Policy:
    """The policy of the config's safety section; PolicyError names what is wrong."""
    rules: list[AnyRule] = []
    if [t for t in blocked_terms if t.strip()]:
        rules.append(TermsRule("blocked_terms", blocked_terms))
    policy = Policy(rules, enabled)
    if policy_file:
        policy.file = Path(policy_file).expanduser()
        policy.rules += load_policy_file(policy.file)
        policy._stamp = _stamp(policy.file)
    return policy


def load_policy_file(path: Path) -> list[AnyRule]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PolicyError(f"safety.policy_file {path}: not found") from None
    except (OSError, yaml.YAMLError) as err:
        raise PolicyError(f"safety.policy_file {path}: {err}") from None
    if raw is None:
        return []
    if not isinstance(raw, dict) or not isinstance(raw.get("rules", []), list):
        raise PolicyError(f"{path}: expected `rules:` with a list of rules")
    unknown = sorted(set(raw) - {"rules"})
    if unknown:
        raise PolicyError(f"{path}: unknown key {unknown[0]!r} (expected `rules`)")
    rules: list[AnyRule] = []
    names: set[str] = set()
    for i, item in enumerate(raw.get("rules") or []):
        where = f"{path}: rules[{i}]"
        rule = parse_rule(item, where)
        if rule.name in names or rule.name == "blocked_terms":
            raise PolicyError(f"{where}: name {rule.name!r} is used twice")
        names.add(rule.name)
        rules.append(rule)
    return rules


def parse_rule(item: Any, where: str) -> AnyRule:
    """One rule of the policy file; PolicyError says where and what."""
    if not isinstance(item, dict):
        raise PolicyError(f"{where}: expected a mapping with `name` and a rule type")
    name = item.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[\w.-]{1,64}", name):
        raise PolicyError(f"{where}: name: expected 1-64 letters, digits, '_', '.' or '-'")
    where = f"{where} ({name})"
    kinds = [k for k in TYPE_KEYS if k in item]
    if len(kinds) != 1:
        raise PolicyError(f"{where}: expected exactly one of {', '.join(TYPE_KEYS)}")
    kind = kinds[0]
    allowed = {"name", kind} | {"personal_data": {"locale"}, "command": {"timeout"},
                                "plugin": {"timeout", "options"}}.get(kind, set())  # fmt: skip
    extra = sorted(set(item) - allowed)
    if extra:
        raise PolicyError(f"{where}: {extra[0]}: not a key of a {kind} rule")
    value = item[kind]
    timeout = item.get("timeout", DEFAULT_TIMEOUT)
    if kind in ("command", "plugin") and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 30
    ):
        raise PolicyError(f"{where}: timeout: expected seconds between 0 and 30, got {timeout!r}")
    if kind == "terms":
        if not _strings(value) or not value:
            raise PolicyError(f"{where}: terms: expected a list of words or phrases")
        return TermsRule(name, value)
    if kind == "regex":
        if not isinstance(value, str):
            raise PolicyError(f"{where}: regex: expected a pattern (a string)")
        try:
            return RegexRule(name, value)
        except re.error as err:
            raise PolicyError(f"{where}: regex: {err}") from None
    if kind == "personal_data":
        locale = item.get("locale", "en_US")
        if not _strings(value) or not value:
            raise PolicyError(f"{where}: personal_data: expected a list of {personal.KINDS}")
        try:
            return PersonalDataRule(name, value, locale)
        except ValueError as err:
            raise PolicyError(f"{where}: {err}") from None
    if kind == "allow_topics":
        if (
            not isinstance(value, dict)
            or not value
            or not all(isinstance(k, str) and _strings(v) and v for k, v in value.items())
        ):
            raise PolicyError(f"{where}: allow_topics: expected topic: [words] pairs")
        return TopicsRule(name, value)
    if kind == "command":
        if not _strings(value) or not value:
            raise PolicyError(f"{where}: command: expected [program, arguments...]")
        if not (os.path.isabs(value[0]) and os.access(value[0], os.X_OK)):
            raise PolicyError(f"{where}: command: {value[0]} is not an executable file "
                              "(give its absolute path)")  # fmt: skip
        return CommandRule(name, value, float(timeout))
    options = item.get("options", {})
    if not isinstance(value, str) or not isinstance(options, dict):
        raise PolicyError(f"{where}: plugin: expected module:attribute or an entry point name")
    try:
        factory = load_plugin(value)
        judge = factory(**options)
    except PolicyError as err:
        raise PolicyError(f"{where}: {err}") from None
    except Exception as err:  # the plugin's own code
        raise PolicyError(f"{where}: plugin {value}: {type(err).__name__}: {err}") from None
    if not callable(getattr(judge, "check", None)):
        raise PolicyError(f"{where}: plugin {value}: its object has no check(text, final)")
    return PluginRule(name, judge, float(timeout))


def load_plugin(spec: str) -> Any:
    """`module:attribute`, or the name of an entry point in ENTRY_POINT_GROUP."""
    if ":" in spec:
        module, _, attribute = spec.partition(":")
        try:
            return getattr(importlib.import_module(module), attribute)
        except (ImportError, AttributeError) as err:
            raise PolicyError(f"plugin {spec}: {err}") from None
    found = [e for e in entry_points(group=ENTRY_POINT_GROUP) if e.name == spec]
    if not found:
        raise PolicyError(f"plugin {spec}: no {ENTRY_POINT_GROUP} entry point of that name")
    return found[0].load()


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v.strip() for v in value)


def time_rules(policy: Policy, text: str) -> dict[str, float]:
    """Seconds each built-in rule takes on `text` (for `safety check --timing`)."""
    out = {}
    for rule in policy.local_rules:
        started = time.perf_counter()
        rule.check(text, True)
        out[rule.name] = time.perf_counter() - started
    return out


def describe(policy: Policy) -> list[str]:
    """One line per rule: its name and kind."""
    kinds: Mapping[type, str] = {TermsRule: "terms", RegexRule: "regex",
                                 PersonalDataRule: "personal_data", TopicsRule: "allow_topics",
                                 CommandRule: "command", PluginRule: "plugin"}  # fmt: skip
    return [f"{r.name} ({kinds.get(type(r), type(r).__name__)})" for r in policy.rules]
