"""`moeprof roofline` command (to be filled by its owner)."""

from moeprof.cli import app  # noqa: F401
