"""`lfm-satellite safety check TEXT`: what the safety rules say about a text, rule by rule, as
the satellite would judge a reply with that text (the config's `safety` section, or
`--policy FILE` instead of its policy file). Exit 0 when it passes, 1 when a rule blocks it,
2 for a policy that cannot be used."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from satellite.cli.loading import load_for_command
from satellite.safety.policy import Policy, build_policy, describe, time_rules

POLICY_HELP = """\
The policy file (safety.policy_file) is YAML: a list under `rules:`, each a `name` and one of
  terms: [word, "a phrase"]        whole words, any case
  regex: "pattern"                 Python re, case-insensitive
  personal_data: [phone, email, card, address]   with locale: en_US | en_GB | de_DE
  allow_topics: {lights: [light, lamp], weather: [weather, rain]}   the reply must name one
  command: [/path/to/judge, args]  JSON {"text", "final"} on stdin; exit 0 pass, 1 block, 2 hold
  plugin: module:attribute         or an `lfm_satellite.policies` entry point; with options: {...}
  timeout: 0.5                     (command, plugin) seconds; slower or failing blocks
"""


def add_safety_commands(commands: Any) -> None:
    """Add `safety` and its `check` subcommand to the CLI's subparsers."""
    safety = commands.add_parser(
        "safety",
        help="check a text against the safety rules",
        description="The safety rules replies must pass before their audio plays.",
    )
    sub = safety.add_subparsers(dest="safety_command", metavar="SAFETY_COMMAND")
    sub.required = True
    check = sub.add_parser(
        "check",
        help="say which rule, if any, blocks a text",
        description="Judge TEXT (or standard input with -) as a complete reply with the config's "
        "safety rules, rule by rule. Exit 0: it passes; 1: a rule blocks it.",
        epilog=POLICY_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("text", metavar="TEXT", help="the text to judge, or - for standard input")
    check.add_argument("--policy", metavar="FILE", help="this policy file instead of the config's")
    check.add_argument(
        "--timing", action="store_true", help="also print how long each built-in rule takes"
    )
    check.set_defaults(handler=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.text == "-" else args.text
    if args.policy is None:
        safety = load_for_command(args).settings.safety
        policy = build_policy(safety.blocked_terms, safety.policy_file, safety.text_filter)
    else:
        policy = build_policy([], args.policy)
    if not policy.rules:
        print("no rules: every text passes (set safety.blocked_terms or safety.policy_file)")
        return 0
    if not policy.enabled:
        print("safety.text_filter is off: the satellite does not apply these rules")
    return asyncio.run(_judge(policy, text, args.timing))


async def _judge(policy: Policy, text: str, timing: bool) -> int:
    blocked = None
    times = time_rules(policy, text) if timing else {}
    for line, rule in zip(describe(policy), policy.rules, strict=True):
        one = Policy([rule])
        found = await one.check(text, final=True)
        verdict = "pass" if found is None else found.verdict
        detail = f": {found.excerpt}" if found is not None and found.excerpt else ""
        took = f"  ({times[rule.name] * 1e6:.0f} µs)" if rule.name in times else ""
        print(f"{verdict:5}  {line}{detail}{took}")
        if found is not None and found.verdict == "block" and blocked is None:
            blocked = found
    if blocked is None:
        print("the text passes every rule")
        return 0
    print(f"blocked by {blocked.rule}")
    return 1
