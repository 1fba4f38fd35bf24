"""`lfm-satellite safety check TEXT`: rule by rule on the config's rules or `--policy FILE`,
exit 0 when the text passes and 1 when a rule blocks it; and `check-config` naming the file
and the rule of a policy file that cannot be used."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from satellite.cli import main

POLICY = """\
rules:
  - name: secrets
    regex: "password\\\\s+is\\\\s+\\\\S+"
  - name: personal
    personal_data: [phone, email]
"""


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "policy.yaml").write_text(POLICY)
    path = tmp_path / "satellite.yaml"
    path.write_text("safety:\n  blocked_terms: [darn]\n  policy_file: policy.yaml\n")
    return path


def test_a_blocked_text_names_the_rule(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    code, out, _ = run(capsys, "safety", "check", "-c", str(config), "--timing",
                       "Call (555) 123-4567, the password is hunter2")  # fmt: skip
    assert code == 1
    lines = out.splitlines()
    assert lines[0].startswith("pass   blocked_terms (terms)") and "µs" in lines[0]
    assert lines[1].startswith("block  secrets (regex): ")
    assert lines[2].startswith("block  personal (personal_data): Call [phone]")
    assert lines[-1] == "blocked by secrets"


def test_a_clean_text_passes_and_stdin_works(
    capsys: pytest.CaptureFixture[str], config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = run(capsys, "-c", str(config), "safety", "check", "The lights are on.")
    assert code == 0 and out.splitlines()[-1] == "the text passes every rule"
    monkeypatch.setattr("sys.stdin", io.StringIO("well darn"))
    code, out, _ = run(capsys, "-c", str(config), "safety", "check", "-")
    assert code == 1 and out.splitlines()[-1] == "blocked by blocked_terms"


def test_another_policy_file_and_no_rules(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    other = tmp_path / "other.yaml"
    other.write_text("rules:\n  - name: shared\n    allow_topics: {lights: [lamp]}\n")
    code, out, _ = run(capsys, "safety", "check", "--policy", str(other), "A story.")
    assert code == 1 and "no allowed topic (lights)" in out
    empty = tmp_path / "empty.yaml"
    empty.write_text("safety: {}\n")
    code, out, _ = run(capsys, "-c", str(empty), "safety", "check", "anything")
    assert code == 0 and out.startswith("no rules")


def test_a_broken_policy_file_is_named(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text("rules:\n  - name: bad\n    regex: '(oops'\n")
    config = tmp_path / "satellite.yaml"
    config.write_text("safety:\n  policy_file: policy.yaml\n")
    code, _, err = run(capsys, "check-config", str(config))
    assert code != 0
    assert "safety.policy_file" in err and "rules[0] (bad): regex: missing )" in err
    code, _, err = run(capsys, "safety", "check", "--policy", str(tmp_path / "policy.yaml"), "x")
    assert code == 2 and "rules[0] (bad): regex" in err and "Traceback" not in err
