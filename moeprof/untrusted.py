"""Reading files that came from elsewhere (capture folders, config.json): bounded and sanitized.

A capture folder or a config.json is data handed to us, possibly damaged or hostile. Everything
read from one goes through here so that no input can exhaust memory (a gzip bomb), the stack (a
JSON document nested thousands deep), the integer parser (a number with 100,000 digits) or the
terminal (escape sequences inside a GPU or kernel name). Each failure is one MoeprofError line.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import zlib
from pathlib import Path
from typing import Any

from moeprof.errors import MoeprofError

# Largest table (after decompression) the analysis reads. Real captures are far smaller (the shipped
# 24-point sweep is 2.7 MB); anything larger is a damaged file or a decompression bomb.
MAX_TABLE_BYTES = 1 << 30
# Largest JSON document (manifest.json, config.json): a real manifest is a few kB.
MAX_JSON_BYTES = 16 << 20
# Deepest JSON nesting accepted: real manifests nest 4 levels; Python's parser recurses per level.
MAX_JSON_DEPTH = 64
# Longest integer literal accepted in JSON (a 64-bit value has 20 digits).
MAX_JSON_INT_DIGITS = 40

_CHUNK = 1 << 20
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
# C0 controls (tab, newline included: the text lands in one-line reports), DEL and C1 controls.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def clean_text(value: str) -> str:
    """`value` without control characters (ESC sequences, newlines): safe to print on a terminal."""
    return _CONTROL.sub("", value) if _CONTROL.search(value) else value


def has_control(value: str) -> bool:
    return bool(_CONTROL.search(value))


def clean_json(value: Any) -> Any:
    """A parsed JSON value with control characters removed from every string (keys included)."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, list):
        return [clean_json(v) for v in value]
    if isinstance(value, dict):
        return {clean_text(str(k)): clean_json(v) for k, v in value.items()}
    return value


def json_depth(text: str) -> int:
    """Deepest [ / { nesting of a JSON text (strings skipped), without recursion."""
    depth = deepest = 0
    for ch in _STRINGS.sub('""', text):
        if ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
        elif ch in "]}":
            depth -= 1
    return deepest


def _bounded_int(literal: str) -> int:
    digits = literal.lstrip("-")
    if len(digits) > MAX_JSON_INT_DIGITS:
        raise ValueError(f"an integer of {len(digits)} digits (at most {MAX_JSON_INT_DIGITS} accepted)")
    return int(literal)


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def load_json(file: Path, what: str = "JSON file") -> Any:
    """Parse a JSON file within MAX_JSON_BYTES, MAX_JSON_DEPTH and MAX_JSON_INT_DIGITS."""
    try:
        size = file.stat().st_size
        if size > MAX_JSON_BYTES:
            raise MoeprofError(f"{file}: {what} of {size:,} bytes is larger than the {MAX_JSON_BYTES:,} accepted")
        raw = file.read_bytes()
    except OSError as exc:
        raise MoeprofError(f"{file}: cannot read ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MoeprofError(f"{file}: {what} is not UTF-8 text (binary or damaged file)") from None
    depth = json_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise MoeprofError(f"{file}: {what} nests {depth} levels deep (at most {MAX_JSON_DEPTH} accepted)")
    try:
        return json.loads(text, parse_int=_bounded_int, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise MoeprofError(f"{file}: not valid JSON, truncated? ({exc.msg}, line {exc.lineno})") from None
    except (ValueError, RecursionError) as exc:
        raise MoeprofError(f"{file}: {what} not accepted ({exc})") from None


def check_table_size(file: Path, limit: int | None = None) -> int:
    """Bytes of `file` once decompressed (gzip streamed, stopping at the limit); MoeprofError beyond it."""
    limit = MAX_TABLE_BYTES if limit is None else limit
    try:
        if file.suffix != ".gz":
            size = file.stat().st_size
        else:
            size = 0
            with gzip.open(file, "rb") as fh:
                while chunk := fh.read(_CHUNK):
                    size += len(chunk)
                    if size > limit:
                        break
    except (OSError, EOFError, zlib.error) as exc:
        raise MoeprofError(f"{file}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    if size > limit:
        raise MoeprofError(f"{file}: more than {limit:,} bytes of table{' once decompressed' if file.suffix == '.gz' else ''} "
                           f"(damaged file or decompression bomb; the limit is moeprof.untrusted.MAX_TABLE_BYTES)")
    return size


def ensure_writable_dir(folder: Path) -> None:
    """Create `folder` if needed and prove a file can be written there (before any long work)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".moeprof-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise MoeprofError(f"{folder}: cannot write there ({exc.strerror or exc})") from None
