#!/usr/bin/env python3
"""The commands of the README.

    python3 dev.py run       set up .venv if needed, migrate, and serve on http://127.0.0.1:8000
    python3 dev.py test      set up .venv if needed and run the test suite (extra args go to pytest)
    python3 dev.py manage …  run a manage.py command with the development defaults of `run`

Only the Python standard library is used here: this file runs before anything is installed.
"""

import hashlib
import os
import signal
import socket
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


def development_environment() -> dict[str, str]:
    """The environment, with DEBUG on when no SECRET_KEY is set: a development server, which
    may use the built-in development key. Production sets SECRET_KEY and leaves DEBUG off."""
    env = dict(os.environ)
    if not env.get("SECRET_KEY", "").strip():
        env.setdefault("DEBUG", "1")
    return env


def exit_status(returncode: int) -> int:
    """A child's return code as a shell reports it (128 + N for death by signal N)."""
    return 128 - returncode if returncode < 0 else returncode


def until_it_exits(command: list[str], env: dict[str, str], *, interactive: bool) -> int:
    """Run a command until it exits; a SIGTERM (or SIGHUP) to this process is passed on to it,
    and waited for, so stopping dev.py stops what it started.

    A server runs in a process group of its own, so that Ctrl+C reaches it once, through here;
    an interactive command stays in the terminal's group, which sends it Ctrl+C itself.
    """
    process = subprocess.Popen(command, env=env, cwd=ROOT, process_group=None if interactive else 0)

    def pass_on(signum: int, _frame: object) -> None:
        process.send_signal(signal.SIGTERM if signum == signal.SIGHUP else signum)

    handlers = {signal.SIGTERM: pass_on, signal.SIGHUP: pass_on}
    handlers[signal.SIGINT] = signal.SIG_IGN if interactive else pass_on
    previous = {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}
    try:
        return exit_status(process.wait())
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def manage_py(*args: str, env: dict[str, str]) -> int:
    return until_it_exits([str(PYTHON), str(ROOT / "manage.py"), *args], env, interactive=True)


def port_in_use(host: str, port: int) -> bool:
    """Whether a server already listens there (binding as daphne does, reusing the address)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]"), port))
        except OSError:
            return True
    return False


def run(args: list[str]) -> int:
    env = development_environment()
    host = env.get("HOST", "127.0.0.1")
    port = env.get("PORT", "8000")
    if not port.isdigit():
        print(f"PORT must be a port number, got {port!r}.", file=sys.stderr)
        return 2
    if port_in_use(host, int(port)):
        print(
            f"Port {port} on {host} is in use, perhaps by chatsite still running: stop it, or "
            f"choose another port, as in `PORT={int(port) + 10} python3 dev.py run`.",
            file=sys.stderr,
        )
        return 1
    status = manage_py("migrate", "--noinput", env=env)
    if not status and env.get("DEBUG", "").lower() not in {"1", "true", "yes", "on"}:
        status = manage_py("collectstatic", "--noinput", "-v0", env=env)
    if status:
        return status
    print(f"chatsite is running at http://{host}:{port}/  (Ctrl+C stops it)", flush=True)
    # daphne with a graceful stop: replies being written get a grace period, then are stored.
    serve = [str(PYTHON), "-m", "chatsite.serve"]
    command = [*serve, "-b", host, "-p", port, *args, "chatsite.asgi:application"]
    return until_it_exits(command, env, interactive=False)


def manage(args: list[str]) -> int:
    return manage_py(*args, env=development_environment())


def test(args: list[str]) -> int:
    env = dict(os.environ)
    env.pop("DEBUG", None)
    env.setdefault("SECRET_KEY", "test-only-secret-key-not-used-in-production")
    status = manage_py("collectstatic", "--noinput", "-v0", env=env)
    if status:
        return status
    return subprocess.run([str(PYTHON), "-m", "pytest", *args], env=env, cwd=ROOT).returncode


def main() -> int:
    commands = {"run": run, "test": test, "manage": manage}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print(__doc__)
        return 2
    ensure_environment()
    return commands[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
