"""The codegen sandbox against real attacks: each attack is a program the way a model's completion
would be; the test checks the host afterwards. Every attack is scored failed or timeout, canonical
solutions run in the same batch still pass, and no process of the sandbox outlives its run."""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from pathlib import Path

import pytest

from applied_aitk import AitkError

from applied_aitk.usecases.codegen import sandbox
from applied_aitk.usecases.codegen.data import read_problems

PROBLEMS = Path(__file__).resolve().parent.parent / "plugins/codegen/sample_data/eval/problems.jsonl"
CAP = 12  # processes per program, set by the test
MEMORY_MB = 333  # unusual, so that the test finds its own programs' processes by their command line
TIMEOUT = 2.0

needs_sandbox = pytest.mark.skipif(isinstance(sandbox.sandbox(), str), reason=f"{sandbox.sandbox()}")


def canonical_programs() -> list[str]:
    lines = [json.loads(line) for line in PROBLEMS.read_text().splitlines() if line.strip()]
    return [p.program("\n" + line["code"] if "code" in line else line["canonical_solution"])
            for line, p in zip(lines, read_problems(PROBLEMS))]


def sandbox_processes() -> list[int]:
    """Live processes on the host running one of this test's programs (the memory limit is in their argv)."""
    marker = str(MEMORY_MB << 20).encode()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if marker in argv and state != "Z":
            found.append(int(entry.name))
    return found


def run(programs: dict[str, str], timeout: float = TIMEOUT) -> dict[str, dict]:
    """Run the attacks together with the sample problems' canonical solutions; those must pass."""
    canonical = canonical_programs()
    results = sandbox.run_programs([*programs.values(), *canonical], timeout=timeout, memory_mb=MEMORY_MB, workers=8, processes=CAP)
    assert sandbox_processes() == [], "a process of the sandbox outlived its run"
    assert [r["status"] for r in results[len(programs):]] == ["passed"] * len(canonical)
    return dict(zip(programs, results))


def assert_all_failed(results: dict[str, dict], secrets: list[str] = ()) -> None:
    for name, result in results.items():
        assert result["status"] in ("failed", "timeout", "memory", "output_limit"), (name, result)
        for secret in secrets:
            assert secret not in result["stderr"], (name, result)


@needs_sandbox
def test_files_secrets_and_environment_stay_out_of_reach(tmp_path, monkeypatch):
    secret = f"secret-{uuid.uuid4().hex}"
    planted = [Path.home() / f".aitk-test-{uuid.uuid4().hex}", Path("/tmp") / f"aitk-test-{uuid.uuid4().hex}"]
    for path in planted:
        path.write_text(secret)
    monkeypatch.setenv("AITK_TEST_SECRET", secret)
    target = tmp_path / "written-by-the-sandbox"
    shadow = [line for line in Path("/etc/shadow").read_text().splitlines() if line.strip()] if os.access("/etc/shadow", os.R_OK) else []
    leak = "import sys\nsys.stderr.write(repr(data))\nraise SystemExit(1)\n"
    try:
        results = run({
            "write outside": f"open({str(target)!r}, 'w').write('pwned')\n",
            "write home": f"open({str(Path.home() / 'pwned')!r}, 'w').write('pwned')\n",
            "read shadow": "data = open('/etc/shadow').read()\n" + leak,
            **{f"read {p}": f"data = open({str(p)!r}).read()\n" + leak for p in planted},
            "environment": "import os\ndata = dict(os.environ)\n" + leak,
            "init environment": "data = open('/proc/1/environ', 'rb').read()\n" + leak,
            "host processes": "import os\ndata = [open(f'/proc/{p}/cmdline', 'rb').read() for p in os.listdir('/proc') if p.isdigit()]\n"
                              "assert b'pytest' in b''.join(data)\n",
            "root": "import os\nassert os.getuid() == 0\n",
        })
    finally:
        for path in planted:
            path.unlink()
    assert_all_failed(results, [secret, *shadow])
    assert not target.exists() and not (Path.home() / "pwned").exists()


@needs_sandbox
def test_no_connection_reaches_a_listener_on_the_host(tmp_path):
    tcp = socket.create_server(("127.0.0.1", 0))
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(str(tmp_path / "listener.sock"))
    abstract = socket.socket(socket.AF_UNIX)
    abstract.bind(f"\0aitk-test-{uuid.uuid4().hex}")
    listeners = [tcp, unix, abstract]
    for listener in listeners[1:]:
        listener.listen()
    try:
        results = run({
            "tcp": f"import socket\nsocket.create_connection(('127.0.0.1', {tcp.getsockname()[1]}), timeout=1)\n",
            "unix": f"import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({str(tmp_path / 'listener.sock')!r})\n",
            "abstract unix": f"import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({abstract.getsockname()!r})\n",
            "raw _socket": f"import _socket\ns = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)\ns.connect(('127.0.0.1', {tcp.getsockname()[1]}))\n",
        })
        assert_all_failed(results)
        for listener in listeners:
            listener.setblocking(False)
            with pytest.raises(BlockingIOError):
                listener.accept()
    finally:
        for listener in listeners:
            listener.close()


@needs_sandbox
def test_fork_bombs_are_capped_and_nothing_outlives_the_run(tmp_path):
    flag = tmp_path / "written-after-the-run"
    bomb = "while True:\n    try:\n        {fork}\n    except OSError:\n        pass\n"
    count = ("import os, time\nn = 0\ntry:\n    while True:\n        if os.fork() == 0:\n            time.sleep(60)\n"
             "            os._exit(0)\n        n += 1\nexcept OSError:\n    pass\nraise SystemExit(f'forked {n}')\n")
    results = run({
        "os.fork": "import os\n" + bomb.format(fork="os.fork()"),
        "posix.fork": "import posix\n" + bomb.format(fork="posix.fork()"),
        "multiprocessing": "import multiprocessing, time\nif __name__ == '__main__':\n    while True:\n"
                           "        multiprocessing.Process(target=time.sleep, args=(60,)).start()\n",
        "count": count,
        "setsid": f"import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(3)\n"
                  f"        open({str(flag)!r}, 'w').write('alive')\n        open('/tmp/alive', 'w').write('alive')\n"
                  f"    os._exit(0)\ntime.sleep(0.2)\nraise SystemExit(1)\n",
        "threads": "import threading, time\nwhile True:\n    threading.Thread(target=time.sleep, args=(60,)).start()\n",
    })
    assert_all_failed(results)
    forked = int(results["count"]["stderr"].split()[-1])
    assert 0 < forked < CAP, results["count"]
    time.sleep(3.5)  # past the moment the daemonized child would write
    assert sandbox_processes() == [] and not flag.exists()


@needs_sandbox
def test_killing_the_caller_and_exhausting_resources_fail_alone():
    results = run({
        "os.kill": "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nos.kill(1, signal.SIGKILL)\nraise SystemExit(1)\n",
        "posix.kill": "import os, posix\nposix.kill(os.getppid(), 9)\nposix.killpg(0, 9)\nraise SystemExit(1)\n",
        "pthread_kill": "import signal, threading\nsignal.pthread_kill(threading.main_thread().ident, signal.SIGKILL)\nraise SystemExit(1)\n",
        "infinite loop": "while True:\n    pass\n",
        "50 GB": "x = bytearray(50 * 1024 ** 3)\n",
        "growing": "chunks = []\nwhile True:\n    chunks.append(b'x' * 10 ** 7)\n",
        "1 GB file": "with open('big', 'wb') as f:\n    for _ in range(1024):\n        f.write(b'x' * 2 ** 20)\n",
        "1 GB stderr": "import sys\nfor _ in range(1024):\n    sys.stderr.write('x' * 2 ** 20)\n",
        "many files": "import os\nfor i in range(10 ** 4):\n    open(f'f{i}', 'wb').write(b'x' * 2 ** 20)\n",
    })
    assert_all_failed(results)
    assert results["infinite loop"]["status"] == "timeout"
    assert results["50 GB"]["status"] == "memory" and results["1 GB file"]["status"] == "output_limit"


def test_without_a_sandbox_nothing_runs_unless_unsafe_is_passed(monkeypatch):
    reason = "bubblewrap (bwrap) is not installed: install bubblewrap (apt-get install bubblewrap)"
    monkeypatch.setattr(sandbox, "sandbox", lambda: reason)
    with pytest.raises(AitkError) as refused:
        sandbox.run_programs(canonical_programs())
    message = str(refused.value)
    assert "\n" not in message and reason in message and "--unsafe-no-sandbox" in message
    assert "unavailable" in sandbox.describe()
    results = sandbox.run_programs(canonical_programs(), unsafe=True)
    assert [r["status"] for r in results] == ["passed"] * len(results)
    assert sandbox.describe(unsafe=True).startswith("NONE")


def test_a_bubblewrap_that_cannot_start_is_refused_with_the_reason(tmp_path, monkeypatch):
    fake = tmp_path / "bwrap"
    fake.write_text('#!/bin/sh\n[ "$1" = --version ] && echo "bubblewrap 0.8.0" && exit 0\n'
                    'echo "bwrap: setting up uid map: Permission denied" >&2\nexit 1\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    for cached in (sandbox.sandbox, sandbox.find):
        cached.cache_clear()
    try:
        with pytest.raises(AitkError) as refused:
            sandbox.run_programs(["pass"])
    finally:
        for cached in (sandbox.sandbox, sandbox.find):
            cached.cache_clear()
    message = str(refused.value)
    assert "\n" not in message and message.startswith("bubblewrap 0.8.0 cannot start a sandbox here")
    assert "setting up uid map: Permission denied" in message and "user namespaces" in message and "--unsafe-no-sandbox" in message
