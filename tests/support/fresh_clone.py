"""A fresh copy of the project, as a newcomer's clone, for tests that run its commands.

The copy has no database, no collected static files, no secret key file and no environment
of the test run: only PATH, HOME and what a test gives. Its `.venv` is the test run's own
virtualenv, linked and stamped as installed, so `python3 dev.py …` finds its dependencies
without installing anything (the one step of a real first run that a test cannot take).
"""

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# What a clone does not have: version control, build products, local databases and secrets.
NOT_IN_A_CLONE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    "*.egg-info",
    "staticfiles",
    "test-artifacts",
    "db.sqlite3*",
    "test-db.sqlite3*",
    "*.env",
)


def make_clone(destination: Path) -> Path:
    """Copy the project to `destination`, with the test run's virtualenv as its `.venv`."""
    shutil.copytree(ROOT, destination, ignore=NOT_IN_A_CLONE, symlinks=True)
    venv = destination / ".venv"
    venv.mkdir()
    for entry in Path(sys.prefix).iterdir():
        if not entry.name.startswith("."):
            (venv / entry.name).symlink_to(entry)
    pyproject = (destination / "pyproject.toml").read_bytes()
    (venv / ".installed").write_text(hashlib.sha256(pyproject).hexdigest())
    return destination


def newcomer_environment(**extra: str) -> dict[str, str]:
    """A shell's environment with nothing of chatsite's configured."""
    return {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": "C.UTF-8",
        **extra,
    }


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def children(pid: int) -> list[int]:
    """The processes started by `pid` (Linux)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        found += [int(child) for child in task.read_text().split()]
    return found


def is_running(pid: int) -> bool:
    """Whether `pid` exists and has not finished (a zombie has)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def stop(process: subprocess.Popen) -> None:
    """End a process a test started, and whatever it started, if still running."""
    if process.poll() is None:
        for child in children(process.pid):
            os.kill(child, signal.SIGKILL)
        process.kill()
        process.wait()
