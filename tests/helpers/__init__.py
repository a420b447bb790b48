"""Shared builders of the test suite (test modules never import each other; they import these)."""

from pathlib import Path

#: The repository's root (tests/helpers/__init__.py is two levels below it).
REPO = Path(__file__).resolve().parents[2]
