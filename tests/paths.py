"""Where the tests find the repository's own files, whatever folder a test module is in."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
"""The repository's root (pyproject.toml, script/, integration/, the example files)."""
