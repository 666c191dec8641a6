#!/usr/bin/env python3
"""The two commands of the README.

    python3 dev.py run    set up .venv if needed, migrate, and serve on http://127.0.0.1:8000
    python3 dev.py test   set up .venv if needed and run the test suite (extra args go to pytest)

Only the Python standard library is used here: this file runs before anything is installed.
"""

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")


def ensure_environment() -> None:
    """Create .venv and install the pinned dependencies, unless pyproject.toml is unchanged."""
    if sys.version_info < (3, 11):  # noqa: UP036 - this file runs on any python3
        sys.exit("chatsite needs Python 3.11 or newer.")
    if not PYTHON.exists():
        print("Creating .venv …", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    stamp = VENV / ".installed"
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == wanted:
        return
    print("Installing dependencies into .venv …", flush=True)
    pip = [str(PYTHON), "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "install", "-e", f"{ROOT}[test]"], check=True)
    stamp.write_text(wanted)


def manage(*args: str, env: dict[str, str]) -> None:
    subprocess.run([str(PYTHON), str(ROOT / "manage.py"), *args], check=True, env=env, cwd=ROOT)


def run(args: list[str]) -> int:
    env = dict(os.environ)
    # With no configuration this is a development server: DEBUG on, which also allows the
    # built-in development SECRET_KEY. Production sets SECRET_KEY and leaves DEBUG off.
    if not env.get("SECRET_KEY"):
        env.setdefault("DEBUG", "1")
    host = env.get("HOST", "127.0.0.1")
    port = env.get("PORT", "8000")
    manage("migrate", "--noinput", env=env)
    if env.get("DEBUG", "").lower() not in {"1", "true", "yes", "on"}:
        manage("collectstatic", "--noinput", "-v0", env=env)
    print(f"chatsite is running at http://{host}:{port}/  (Ctrl+C stops it)", flush=True)
    command = [str(BIN / "daphne"), "-b", host, "-p", port, *args, "chatsite.asgi:application"]
    try:
        return subprocess.run(command, env=env, cwd=ROOT).returncode
    except KeyboardInterrupt:
        return 0


def test(args: list[str]) -> int:
    env = dict(os.environ)
    env.pop("DEBUG", None)
    env.setdefault("SECRET_KEY", "test-only-secret-key-not-used-in-production")
    manage("collectstatic", "--noinput", "-v0", env=env)
    return subprocess.run([str(PYTHON), "-m", "pytest", *args], env=env, cwd=ROOT).returncode


def main() -> int:
    commands = {"run": run, "test": test}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print(__doc__)
        return 2
    ensure_environment()
    return commands[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
