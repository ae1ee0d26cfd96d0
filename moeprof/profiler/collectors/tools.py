"""Finding the profilers (nsys, ncu), their versions, and the environment they need."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

NSYS_ENV = "MOEPROF_NSYS"
NCU_ENV = "MOEPROF_NCU"
NSYS_LIBS_ENV = "MOEPROF_NSYS_LIBS"

_NSYS_GLOBS = [
    "/opt/nvidia/nsight-systems/*/bin/nsys",
    "/opt/nvidia/nsight-systems/*/target-linux-x64/nsys",
    "/opt/nvidia/nsight-compute/*/host/target-linux-x64/nsys",
    "/usr/local/cuda/bin/nsys",
    "/usr/local/cuda-*/bin/nsys",
]
_NCU_GLOBS = [
    "/opt/nvidia/nsight-compute/*/ncu",
    "/usr/local/cuda/bin/ncu",
    "/usr/local/cuda-*/bin/ncu",
]


def _newest(paths: list[str]) -> str | None:
    paths = [p for p in paths if os.path.isfile(p) and os.access(p, os.X_OK)]
    return sorted(paths, key=_version_key)[-1] if paths else None


def _version_key(path: str) -> tuple:
    m = re.search(r"(\d+(?:\.\d+)+)", path)
    return tuple(int(x) for x in m.group(1).split(".")) if m else ()


def find_tool(name: str, env_var: str, globs: list[str]) -> str | None:
    """env override, then PATH, then known install folders (newest version first)."""
    env = os.environ.get(env_var)
    if env:
        return env if os.path.isfile(env) else shutil.which(env)
    on_path = shutil.which(name)
    if on_path:
        return on_path
    return _newest([p for g in globs for p in glob.glob(g)])


def find_nsys() -> str | None:
    return find_tool("nsys", NSYS_ENV, _NSYS_GLOBS)


def find_ncu() -> str | None:
    return find_tool("ncu", NCU_ENV, _NCU_GLOBS)


def nsys_env(base: dict[str, str] | None = None, cwd: str | Path | None = None) -> dict[str, str]:
    """Environment for nsys: prepend a `.nsys-libs` folder (cwd or $MOEPROF_NSYS_LIBS) to LD_LIBRARY_PATH.

    Some installs (nsys shipped inside nsight-compute) miss libdw/libelf; we carry them there.
    """
    env = dict(os.environ if base is None else base)
    cands = [env.get(NSYS_LIBS_ENV, ""), str(Path(cwd or os.getcwd()) / ".nsys-libs")]
    for c in cands:
        if c and os.path.isdir(c):
            env["LD_LIBRARY_PATH"] = os.path.abspath(c) + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
            break
    return env


def tool_version(path: str, env: dict[str, str] | None = None) -> str | None:
    """'2025.3.1.0' from `<tool> --version`, or None when it does not run."""
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60, env=env).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"[Vv]ersion\s+(\d+\.\d+(?:\.\d+)*)", out)
    return m.group(1) if m else (out.strip().splitlines() or [None])[-1]


def ncu_python_dirs(ncu: str | None) -> list[str]:
    """Folders that may hold the ncu_report module (extras/python beside the ncu install)."""
    dirs = []
    if ncu:
        real = Path(os.path.realpath(ncu))
        for up in [real.parent, *real.parents[:3]]:
            dirs.append(str(up / "extras" / "python"))
    dirs += sorted(glob.glob("/opt/nvidia/nsight-compute/*/extras/python"), key=_version_key, reverse=True)
    return [d for d in dict.fromkeys(dirs) if os.path.isfile(os.path.join(d, "ncu_report.py"))]


def import_ncu_report(ncu: str | None = None):
    """The ncu_report module, or None where it is not installed."""
    try:
        import ncu_report  # type: ignore[import-not-found]

        return ncu_report
    except ImportError:
        pass
    for d in ncu_python_dirs(ncu):
        sys.path.append(d)
        try:
            import ncu_report  # type: ignore[import-not-found]

            return ncu_report
        except ImportError:
            sys.path.remove(d)
    return None


# compute capability -> ncu chip name (for --query-metrics --chip)
CHIPS = {(9, 0): "gh100", (8, 0): "ga100", (8, 6): "ga102", (8, 9): "ad102", (10, 0): "gb100", (12, 0): "gb202"}


def chip_for(compute_capability: str | None) -> str | None:
    if not compute_capability:
        return None
    try:
        major, minor = (int(x) for x in str(compute_capability).split(".")[:2])
    except ValueError:
        return None
    return CHIPS.get((major, minor))
