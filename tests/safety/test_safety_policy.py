"""The policy file: each rule type loads, every mistake is named with the file and the rule,
a changed file is read again (a broken one keeps the rules in force), and the external judges
(a real command, a plugin by module path and by entry point) pass, hold and block, and fail
closed when they crash, answer nonsense or take too long."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from satellite.safety.policy import (
    CommandRule,
    PluginRule,
    PolicyError,
    build_policy,
    load_policy_file,
)


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def judge_script(folder: Path, body: str) -> Path:
    """An executable Python script reading the JSON request on stdin."""
    script = folder / "judge.py"
    script.write_text(f"#!{sys.executable}\nimport json, sys, time\nrequest = json.load(sys.stdin)\n"
                      + textwrap.dedent(body))  # fmt: skip
    script.chmod(0o755)
    return script


def test_every_rule_type_loads(tmp_path: Path) -> None:
    judge = judge_script(tmp_path, "sys.exit(0)\n")
    policy = write(
        tmp_path / "policy.yaml",
        f"""\
        rules:
          - name: words
            terms: [darn]
          - name: secrets
            regex: "password is \\\\S+"
          - name: personal
            personal_data: [phone, email]
            locale: en_GB
          - name: shared
            allow_topics: {{lights: [light]}}
          - name: judge
            command: [{judge}]
            timeout: 2
        """,
    )
    rules = load_policy_file(policy)
    assert [r.name for r in rules] == ["words", "secrets", "personal", "shared", "judge"]
    assert isinstance(rules[-1], CommandRule) and rules[-1].timeout == 2
    built = build_policy(["heck"], str(policy))
    assert [r.name for r in built.rules][:2] == ["blocked_terms", "words"]


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("- name: a\n  regex: '(unclosed'", r"rules\[0\] \(a\): regex: missing \)"),
        ("- name: a\n  terms: [x]\n  regex: y", r"rules\[0\] \(a\): expected exactly one of"),
        ("- name: a\n  terms: []", r"rules\[0\] \(a\): terms: expected a list"),
        ("- name: a\n  terms: [x]\n  locale: en_US", r"rules\[0\] \(a\): locale: not a key of a terms rule"),
        ("- name: a\n  personal_data: [passport]", r"rules\[0\] \(a\): unknown personal data kind 'passport'"),
        ("- name: a\n  personal_data: [phone]\n  locale: fr_FR", r"unknown locale 'fr_FR'"),
        ("- name: a\n  command: [/no/such/judge]", r"command: /no/such/judge is not an executable"),
        ("- name: a\n  command: [/bin/true]\n  timeout: 0", r"timeout: expected seconds between 0 and 30"),
        ("- name: a\n  plugin: no_such_module:Judge", r"rules\[0\] \(a\): plugin no_such_module:Judge"),
        ("- name: a\n  plugin: no-such-entry-point", r"no lfm_satellite.policies entry point"),
        ("- name: a\n  terms: [x]\n- name: a\n  terms: [y]", r"rules\[1\]: name 'a' is used twice"),
        ("- name: 'has space'\n  terms: [x]", r"rules\[0\]: name: expected 1-64 letters"),
        ("- just a string", r"rules\[0\]: expected a mapping"),
    ],
)  # fmt: skip
def test_mistakes_are_named(tmp_path: Path, rule: str, message: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("rules:\n" + textwrap.indent(rule, "  ") + "\n")
    with pytest.raises(PolicyError, match=message) as caught:
        load_policy_file(path)
    assert str(path) in str(caught.value)


def test_file_level_mistakes(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"safety.policy_file .*: not found"):
        build_policy([], str(tmp_path / "missing.yaml"))
    with pytest.raises(PolicyError, match="unknown key 'rule'"):
        load_policy_file(write(tmp_path / "p.yaml", "rule: []\n"))
    with pytest.raises(PolicyError, match="expected `rules:`"):
        load_policy_file(write(tmp_path / "p.yaml", "- a\n"))
    assert load_policy_file(write(tmp_path / "p.yaml", "")) == []


def test_a_changed_file_is_read_again_and_a_broken_one_keeps_the_rules(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path / "policy.yaml", "rules:\n  - name: words\n    terms: [darn]\n")
    policy = build_policy(["heck"], str(path))
    assert not policy.reload_if_changed()
    assert policy.check_local("darn", True) is not None
    write(path, "rules:\n  - name: words\n    terms: [drat]\n")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert policy.reload_if_changed()
    assert policy.check_local("darn", True) is None and policy.check_local("drat", True) is not None
    assert policy.check_local("heck", True) is not None, "the config's terms stay"
    write(path, "rules:\n  - name: words\n    regex: '('\n")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 2 * 10**9))
    with caplog.at_level(logging.ERROR, "satellite.safety"):
        assert not policy.reload_if_changed()
    assert "the rules in force stay" in caplog.text and "regex" in caplog.text
    assert policy.check_local("drat", True) is not None


@pytest.mark.parametrize(
    ("body", "verdict", "why"),
    [
        ("sys.exit(0)\n", None, ""),
        ("print('too rude'); sys.exit(1 if 'rude' in request['text'] else 0)\n", "block", "too rude"),
        ("sys.exit(0 if request['final'] else 2)\n", "hold", ""),
        ("sys.exit(5)\n", "block", "rule failed: RuntimeError"),
        ("time.sleep(3)\n", "block", "rule failed: took longer than 0.5 s"),
    ],
)  # fmt: skip
def test_a_command_judges_and_fails_closed(
    tmp_path: Path, body: str, verdict: str | None, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    rule = CommandRule("judge", [str(judge_script(tmp_path, body))], timeout=0.5)
    started = time.monotonic()
    with caplog.at_level(logging.ERROR, "satellite.safety"):
        found = asyncio.run(rule.judge("a rude reply", final=False))
    assert time.monotonic() - started < 2.5
    if verdict is None:
        assert found is None
    else:
        assert found is not None and found.verdict == verdict and found.excerpt.startswith(why)
    if why.startswith("rule failed"):
        assert "fail closed" in caplog.text and "'judge'" in caplog.text


PLUGIN = """\
class Judge:
    def __init__(self, word="rude", answer=None):
        self.word, self.answer = word, answer

    def check(self, text, final):
        if self.answer is not None:
            return self.answer
        if self.word in text:
            return "mentions " + self.word
        return None if final else "pass"
"""


@pytest.fixture
def plugin_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "my_judges.py").write_text(PLUGIN)
    dist = tmp_path / "my_judges-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-judges\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[lfm_satellite.policies]\nrudeness = my_judges:Judge\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_judges"


def test_plugins_by_path_and_by_entry_point(tmp_path: Path, plugin_module: str) -> None:
    path = write(
        tmp_path / "policy.yaml",
        """\
        rules:
          - name: by-path
            plugin: my_judges:Judge
            options: {word: snarky}
          - name: by-entry-point
            plugin: rudeness
            timeout: 1
        """,
    )
    policy = build_policy([], str(path))
    assert all(isinstance(r, PluginRule) for r in policy.rules)
    found = asyncio.run(policy.check("a snarky remark"))
    assert found is not None and (found.rule, found.excerpt) == ("by-path", "mentions snarky")
    found = asyncio.run(policy.check("a rude remark"))
    assert found is not None and found.rule == "by-entry-point"
    assert asyncio.run(policy.check("a kind remark")) is None


def test_a_plugin_answering_nonsense_fails_closed(plugin_module: str) -> None:
    from my_judges import Judge  # type: ignore[import-not-found]

    found = asyncio.run(PluginRule("odd", Judge(answer=42), 1.0).judge("x", True))
    assert found is not None and found.verdict == "block" and "TypeError" in found.excerpt
