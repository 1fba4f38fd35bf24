"""The settings' own documentation: the docstring under each field of `satellite.settings`,
and the example config file written from them (`lfm-satellite check-config --example`)."""

from __future__ import annotations

import ast
import inspect
import itertools
import textwrap
import typing
from dataclasses import fields, is_dataclass
from functools import cache
from typing import Any

import yaml

from satellite import settings as settings_module
from satellite.config import KeyPath, iter_fields
from satellite.settings import Settings


@cache
def field_docs() -> dict[tuple[str, str], str]:
    """(class name, field name) -> the docstring written under the field."""
    tree = ast.parse(inspect.getsource(settings_module))
    docs: dict[tuple[str, str], str] = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        for stmt, following in itertools.pairwise(node.body):
            if (
                isinstance(stmt, ast.AnnAssign)
                and isinstance(stmt.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                docs[(node.name, stmt.target.id)] = inspect.cleandoc(following.value.value)
    return docs


def doc_for(path: KeyPath) -> str:
    """The docstring of the setting at `path` (e.g. ("mqtt", "port")); empty when none."""
    cls: Any = Settings
    for part in path[:-1]:
        cls = typing.get_type_hints(cls)[part]
    return field_docs().get((cls.__name__, path[-1]), "")


def example_yaml() -> str:
    """A complete config file with every key at its default and its documentation as comments."""
    lines = [
        "# LFM Satellite configuration.",
        "# Every key is shown at its default; delete what you do not change.",
        "# Check a file with: lfm-satellite check-config FILE",
        "",
    ]
    defaults = Settings()
    for section in fields(Settings):
        lines += [f"# {doc_for((section.name,))}", f"{section.name}:"]
        section_value = getattr(defaults, section.name)
        assert is_dataclass(section_value)
        for path, _spec in iter_fields(type(section_value), (section.name,)):
            for doc_line in textwrap.wrap(doc_for(path), 88, break_on_hyphens=False):
                lines.append(f"  # {doc_line}")
            value = getattr(section_value, path[-1])
            rendered = yaml.safe_dump({path[-1]: value}, default_flow_style=True, width=1000)
            lines.append("  " + rendered.strip().removeprefix("{").removesuffix("}"))
        lines.append("")
    return "\n".join(lines)
