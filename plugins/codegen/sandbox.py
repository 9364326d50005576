"""Run generated code in a sandboxed subprocess: time, memory and file-size limits, no network,
a fresh temporary directory as cwd, an empty environment, only the standard library.

Layers, outermost first: a new network namespace (``unshare -rn``) where the kernel allows one;
an isolated interpreter (``python -I -S``: no user site, no site-packages, no PYTHON* variables);
rlimits set in the child before the program runs; a guard that replaces sockets, process
creation, file removal and ``resource`` with functions that raise. The guard is best effort
(pure Python cannot stop determined code), the namespace and the rlimits are not."""

from __future__ import annotations

import functools
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

OUTPUT_LIMIT = 16 << 20

BOOTSTRAP = r"""
import resource, sys
memory, cpu, output = (int(a) for a in sys.argv[1:4])
resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
resource.setrlimit(resource.RLIMIT_FSIZE, (output, output))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
source = open("program.py", encoding="utf-8").read()

def _denied(*args, **kwargs):
    raise PermissionError("not allowed in the aitk sandbox")

import os, shutil, socket, subprocess, _socket
for module in (socket, _socket):
    for name in ("socket", "socketpair", "fromfd", "create_connection", "create_server", "getaddrinfo", "gethostbyname"):
        if hasattr(module, name):
            setattr(module, name, _denied)
for name in ("system", "popen", "fork", "forkpty", "kill", "killpg", "execv", "execve", "execvp", "execvpe",
             "spawnv", "spawnve", "spawnvp", "posix_spawn", "posix_spawnp", "remove", "unlink", "rmdir",
             "removedirs", "rename", "renames", "replace", "truncate", "chmod", "chown", "link", "symlink",
             "setuid", "setgid", "putenv", "chdir", "fchdir", "chroot"):
    if hasattr(os, name):
        setattr(os, name, _denied)
subprocess.Popen = shutil.rmtree = shutil.move = shutil.chown = _denied
for name in ("resource", "ctypes", "_ctypes", "multiprocessing", "_posixsubprocess"):
    sys.modules[name] = None
del os, shutil, socket, subprocess, _socket, module, name, resource
exec(compile(source, "program.py", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
"""


@functools.cache
def isolation() -> list[str]:
    """``unshare -rn`` when this kernel lets an unprivileged process make a network namespace, else nothing."""
    unshare = shutil.which("unshare")
    if unshare:
        try:
            probe = subprocess.run([unshare, "-rn", sys.executable, "-I", "-S", "-c", "pass"], env={}, capture_output=True, timeout=20)
            if probe.returncode == 0:
                return [unshare, "-rn"]
        except (OSError, subprocess.TimeoutExpired):
            pass
    return []


def network_isolation() -> str:
    return "network namespace + socket guard" if isolation() else "socket guard only (unshare -rn not permitted here)"


def run_program(source: str, timeout: float = 5.0, memory_mb: int = 512) -> dict[str, Any]:
    """Run ``source`` in the sandbox; ``status`` is passed, failed, timeout, memory or output_limit."""
    with tempfile.TemporaryDirectory(prefix="aitk-sandbox-") as tmp:
        folder = Path(tmp)
        (folder / "program.py").write_text(source, encoding="utf-8")
        limits = [str(memory_mb << 20), str(math.ceil(timeout) + 1), str(OUTPUT_LIMIT)]
        command = [*isolation(), sys.executable, "-I", "-S", "-c", BOOTSTRAP, *limits]
        started = time.perf_counter()
        with open(folder / "stdout", "wb") as out, open(folder / "stderr", "wb") as err:
            process = subprocess.Popen(command, cwd=folder, env={}, stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True)
            try:
                code = process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_group(process)
                code = None
        seconds = time.perf_counter() - started
        stderr = (folder / "stderr").read_bytes()[-2000:].decode("utf-8", "replace")
    return {"status": _status(code, stderr), "seconds": round(seconds, 3), "returncode": code, "stderr": stderr.strip()[-500:]}


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def _status(code: int | None, stderr: str) -> str:
    if code == 0:
        return "passed"
    if code is None or code in (-signal.SIGXCPU, -signal.SIGKILL):
        return "timeout"
    if code == -signal.SIGXFSZ or "[Errno 27] File too large" in stderr:
        return "output_limit"
    if "MemoryError" in stderr:
        return "memory"
    return "failed"


def run_programs(sources: list[str], timeout: float = 5.0, memory_mb: int = 512, workers: int | None = None) -> list[dict[str, Any]]:
    """``run_program`` over many sources, a few at a time (each is its own process)."""
    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        return list(pool.map(lambda s: run_program(s, timeout, memory_mb), sources))
