"""README.md works as written: its command blocks run on a fresh copy of the project, `dev.py
run` starts and stops cleanly, and its examples do not fight over ports.

Each ```sh block runs in a shell of its own, as a newcomer would type it, on a fresh copy
(tests/support/fresh_clone.py) with a SQLite database of its own. A command is run unless
NOT_RUN says why not; a command that asks questions gets the newcomer's answers in a terminal.
"""

import os
import re
import select
import shlex
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.conf import settings

from conversations.llm.offline import offline_reply
from tests.support import fake_openai
from tests.support.fresh_clone import (
    children,
    is_running,
    make_clone,
    newcomer_environment,
    port_is_free,
    stop,
)
from tests.support.live import free_port

ROOT = Path(settings.BASE_DIR)
README = (ROOT / "README.md").read_text()
EMAIL = "newcomer@example.com"
PASSWORD = "a long and uncommon passphrase"

# README commands that are not run here, by how they start, and why.
NOT_RUN = {
    "python3 dev.py run": "starts the development server: test_dev_py_run_* below start it",
    "python3 dev.py test": "runs this very test suite",
    "DATABASE_URL=postgres://postgres@127.0.0.1:5432/chatsite REDIS_URL=": (
        "runs this test suite on PostgreSQL and Redis, as CI does"
    ),
    "sudo -u postgres ": "needs PostgreSQL's superuser, through sudo",
    ".venv/bin/python -m chatsite.serve ": (
        "starts a production server: tests/test_deployment.py and tests/test_reverse_proxy.py "
        "start it as documented"
    ),
    "curl ": "needs a running server and an API token: tests/test_api.py covers each endpoint",
    ".venv/bin/python -m bench.": "a benchmark, which runs for minutes: docs/performance.md",
}

# What a command asks, in order, and the newcomer's answers.
ANSWERS = {
    "python3 dev.py manage createsuperuser": [
        ("Email address:", EMAIL),
        ("Password:", PASSWORD),
        ("Password (again):", PASSWORD),
    ]
}

# Run before a block, standing in for a command of an earlier block that is not run here.
EARLIER = {
    "An admin user": "python3 dev.py manage migrate --noinput  # as `python3 dev.py run` did",
}

# Each block's shell has its own SQLite database, whatever the block exports, and no Redis.
AFTER_EACH_COMMAND = 'export DATABASE_URL="$README_DATABASE_URL"; unset REDIS_URL'


@dataclass
class Block:
    heading: str
    commands: list[str]


def readme_blocks() -> list[Block]:
    blocks = []
    heading = ""
    for match in re.finditer(r"^(#+) ([^\n]+)$|^```(?:sh|bash)\n(.*?)^```", README, re.M | re.S):
        if match[2]:
            heading = match[2].strip()
            continue
        text = re.sub(r"\\\n\s*", "", match[3])
        commands = [
            line.strip()
            for line in text.splitlines()
            if line.strip() and not line.strip().startswith("#")
        ]
        blocks.append(Block(heading, commands))
    return blocks


def reason_not_run(command: str) -> str:
    return next((why for start, why in NOT_RUN.items() if command.startswith(start)), "")


def answers_to(command: str) -> list[tuple[str, str]]:
    return next((asked for start, asked in ANSWERS.items() if command.startswith(start)), [])


def test_every_readme_command_is_run_or_listed_with_the_reason() -> None:
    commands = [command for block in readme_blocks() for command in block.commands]
    run = [command for command in commands if not reason_not_run(command)]
    unused = [start for start in NOT_RUN if not any(c.startswith(start) for c in commands)]

    assert "python3 dev.py manage createsuperuser" in " ".join(run)
    assert ".venv/bin/python manage.py migrate" in run
    assert unused == []


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield make_clone(tmp_path_factory.mktemp("readme") / "chatsite")


def block_script(block: Block) -> str:
    """The block as a shell script that stops at the first command that fails, saying which."""
    lines = ["set -u", AFTER_EACH_COMMAND]
    commands = [EARLIER[block.heading]] if block.heading in EARLIER else []
    for command in [*commands, *block.commands]:
        if reason_not_run(command):
            continue
        failed = shlex.quote(f"README command failed: {command}")
        lines += [
            f"echo {shlex.quote('$ ' + command)}",
            f"{{ {command}\n}} || {{ echo {failed} >&2; exit 1; }}",
            AFTER_EACH_COMMAND,
        ]
    return "\n".join(lines) + "\n"


def run_in_terminal(
    script: str, cwd: Path, env: dict[str, str], answers: list[tuple[str, str]]
) -> tuple[int, str]:
    """Run a shell script in a terminal, typing each answer once its question shows."""
    controller, terminal = os.openpty()
    process = subprocess.Popen(
        ["bash", "-c", script],
        cwd=cwd,
        env=env,
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        start_new_session=True,
    )
    os.close(terminal)
    output, asked_up_to = "", 0
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline:
            if not select.select([controller], [], [], 1)[0]:
                continue
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the script and everything it started have exited
                break
            if not chunk:
                break
            output += chunk.decode(errors="replace")
            while answers and (found := output.find(answers[0][0], asked_up_to)) >= 0:
                question, answer = answers.pop(0)
                asked_up_to = found + len(question)
                os.write(controller, answer.encode() + b"\n")
        else:
            pytest.fail(f"The README block did not finish:\n{output}")
    finally:
        os.close(controller)
        stop(process)
    return process.wait(), output


def blocks_to_run() -> list[Block]:
    return [b for b in readme_blocks() if any(not reason_not_run(c) for c in b.commands)]


@pytest.mark.live
@pytest.mark.parametrize("block", blocks_to_run(), ids=lambda block: block.heading)
def test_a_readme_block_runs_as_written(clone: Path, block: Block) -> None:
    database = clone / (re.sub(r"\W+", "-", block.heading) + ".sqlite3")
    answers = [answer for command in block.commands for answer in answers_to(command)]

    status, output = run_in_terminal(
        block_script(block),
        clone,
        newcomer_environment(README_DATABASE_URL=f"sqlite:///{database}"),
        answers,
    )

    assert status == 0, output
    assert "Traceback" not in output
    assert answers == [], f"Never asked {answers}:\n{output}"
    if any(
        command.startswith("python3 dev.py manage createsuperuser") for command in block.commands
    ):
        with sqlite3.connect(database) as db:
            admins = db.execute("select email from accounts_user where is_superuser").fetchall()
        assert admins == [(EMAIL,)]


# --------------------------------------------------------------------------- #
# dev.py run
# --------------------------------------------------------------------------- #


@contextmanager
def dev_server(clone: Path, port: int) -> Iterator[tuple[subprocess.Popen, int]]:
    """`python3 dev.py run` on `port`, listening, and the pid of its daphne; whatever is left
    of either is killed at the end."""
    log = clone / f"dev-server-{port}.log"
    with log.open("w") as output:
        server = subprocess.Popen(
            ["python3", "dev.py", "run"],
            cwd=clone,
            env=newcomer_environment(
                PORT=str(port), DATABASE_URL=f"sqlite:///{clone}/dev-server-{port}.sqlite3"
            ),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    daphne = None
    try:
        deadline = time.monotonic() + 120
        while not daphne and time.monotonic() < deadline:
            if server.poll() is not None:
                pytest.fail(f"dev.py run exited:\n{log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                [daphne] = children(server.pid)
            except OSError:
                time.sleep(0.2)
        if not daphne:
            pytest.fail(f"dev.py run did not listen:\n{log.read_text()}")
        yield server, daphne
    finally:
        stop(server)
        if daphne and is_running(daphne):
            os.kill(daphne, signal.SIGKILL)


@pytest.mark.live
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_dev_py_run_stops_daphne_with_it(clone: Path, stop_signal: signal.Signals) -> None:
    port = free_port()
    with dev_server(clone, port) as (server, daphne):
        server.send_signal(stop_signal)
        server.wait(timeout=60)

        assert not is_running(daphne)
        assert port_is_free(port)


@pytest.mark.live
def test_dev_py_run_says_in_one_line_that_the_port_is_taken(clone: Path) -> None:
    with socket.socket() as other_server:
        other_server.bind(("127.0.0.1", 0))
        other_server.listen()
        port = other_server.getsockname()[1]

        result = subprocess.run(
            ["python3", "dev.py", "run"],
            cwd=clone,
            env=newcomer_environment(PORT=str(port)),
            capture_output=True,
            text=True,
            timeout=120,
        )

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"Port {port} on 127.0.0.1 is in use, perhaps by chatsite still running: stop it, or "
        f"choose another port, as in `PORT={port + 10} python3 dev.py run`."
    ]


# --------------------------------------------------------------------------- #
# Ports of the examples
# --------------------------------------------------------------------------- #

SERVER = re.compile(
    r"(?P<kind>vllm serve|llama-server|tests\.support\.fake_openai|daphne|chatsite\.serve|uvicorn)"
    r"[^`\n]*?"
    r"(?:--port|-p) (?P<port>\d+)"
)
LOCAL_BASE_URL = re.compile(r"OPENAI_BASE_URL=http://(?:127\.0\.0\.1|localhost):(\d+)/v1")
OLLAMA_PORT = 11434


def servers_in(text: str) -> dict[str, set[int]]:
    found: dict[str, set[int]] = {}
    for match in SERVER.finditer(text):
        kind = (
            "chatsite"
            if match["kind"] in {"daphne", "chatsite.serve", "uvicorn"}
            else match["kind"]
        )
        found.setdefault(kind, set()).add(int(match["port"]))
    return found


def test_each_example_server_has_a_port_of_its_own() -> None:
    servers = servers_in(README)
    # The fake server's own default and docstring example count as examples too.
    for kind, ports in servers_in(fake_openai.__doc__).items():
        servers[kind] |= ports
    servers["tests.support.fake_openai"].add(fake_openai.DEFAULT_PORT)
    chatsite = servers.pop("chatsite") | {8000}
    model_servers = {kind: ports for kind, ports in servers.items()}
    model_ports = [port for ports in model_servers.values() for port in ports] + [OLLAMA_PORT]

    assert set(model_servers) == {"vllm serve", "llama-server", "tests.support.fake_openai"}
    assert len(model_ports) == len(set(model_ports)), model_servers
    assert not chatsite & set(model_ports), (chatsite, model_servers)
    for text in (README, offline_reply([])):
        for port in LOCAL_BASE_URL.findall(text):
            assert int(port) in model_ports, f"OPENAI_BASE_URL on port {port}"


def test_the_examples_for_local_servers_name_the_model_they_serve() -> None:
    examples = [
        line
        for text in (README, offline_reply([]))
        for line in text.splitlines()
        if re.search(r"OPENAI_BASE_URL=http://127\.0\.0\.1:(11434|8100|8080)/", line)
    ]

    assert len(examples) >= 4
    for example in examples:
        assert "CHAT_DEFAULT_MODEL=" in example, example
