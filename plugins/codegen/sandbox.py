"""Run generated code isolated by the operating system: each program in its own bubblewrap sandbox
(namespaces, uid 65534, read-only system, private tmpfs; see ``applied_aitk.usecases.codegen.bubblewrap``) under
rlimits on address space, CPU time, file size, open files and processes, killed with everything it
started at its timeout. Where bubblewrap cannot run, nothing runs unless the caller passes
``unsafe=True`` (``--unsafe-no-sandbox``): then programs run as the caller, with the same rlimits,
in a temporary folder, behind a Python guard that is a convenience against accidents, not security.
"""

from __future__ import annotations

import functools
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from applied_aitk import AitkError

from applied_aitk.usecases.codegen.bubblewrap import USERNS, Bubblewrap, ProcessCap, find, info_pid

OUTPUT_LIMIT = 16 << 20  # bytes one file (and the stderr capture) may reach
OPEN_FILES = 256
PROCESSES = 64  # processes and threads of one program, all its children included

BOOTSTRAP = r"""
import resource, sys
names = ("RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_NOFILE", "RLIMIT_NPROC", "RLIMIT_CORE")
for name, value in zip(names, map(int, sys.argv[1:7])):
    resource.setrlimit(getattr(resource, name), (value, value + (name == "RLIMIT_CPU")))
guard = sys.argv[7] == "guard"
source = open("program.py", encoding="utf-8").read()
sys.argv = ["program.py"]
if guard:
    def _denied(*args, **kwargs):
        raise PermissionError("not allowed by the aitk guard")

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
    for name in ("ctypes", "_ctypes", "multiprocessing", "_posixsubprocess"):
        sys.modules[name] = None
    del os, shutil, socket, subprocess, _socket, module
del resource, names, name, value, guard
exec(compile(source, "program.py", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
"""


@functools.cache
def sandbox() -> Bubblewrap | str:
    """The working bubblewrap sandbox, or one line saying why there is none and how to fix it.

    Probed once per process: finding ``bwrap`` and running an empty program in it."""
    found = find()
    if isinstance(found, str):
        return found
    probe = _run_sandboxed(found, "", 20.0, 64, PROCESSES)
    if probe["status"] != "passed":
        why = (probe["stderr"].splitlines() or [f"exit status {probe['returncode']}"])[-1]
        return f"{found.name} cannot start a sandbox here ({why}): {USERNS}"
    return found


def require(unsafe: bool = False) -> None:
    """Raise the one-line refusal when there is no sandbox and ``unsafe`` was not given."""
    found = sandbox()
    if isinstance(found, str) and not unsafe:
        raise AitkError(f"{found}; or pass --unsafe-no-sandbox to run generated code unisolated "
                        "(dangerous: it then runs as you, with your files and network)")


def describe(timeout: float = 5.0, memory_mb: int = 512, processes: int = PROCESSES, unsafe: bool = False) -> str:
    """The isolation ``run_programs`` really uses with these settings, for reports."""
    found = sandbox()
    limits = (f"rlimits: address space {memory_mb} MB, CPU {_cpu_seconds(timeout)} s, file size {OUTPUT_LIMIT >> 20} MB, "
              f"{OPEN_FILES} open files, {processes} processes; killed at {timeout:g} s")
    if isinstance(found, str):
        return f"NONE (--unsafe-no-sandbox: {found}); python guard only; {limits}" if unsafe else f"unavailable: {found}"
    return f"{found.describe()}; {limits}"


def run_program(source: str, timeout: float = 5.0, memory_mb: int = 512, processes: int = PROCESSES,
                unsafe: bool = False) -> dict[str, Any]:
    """Run ``source`` isolated; ``status`` is passed, failed, timeout, memory or output_limit.

    ``timeout`` is wall-clock seconds, ``memory_mb`` the address-space limit, ``processes`` the most
    processes and threads at once. Raises AitkError (one line) when there is no sandbox and not ``unsafe``."""
    require(unsafe)
    found = sandbox()
    if isinstance(found, str):
        return _run_unisolated(source, timeout, memory_mb, processes)
    return _run_sandboxed(found, source, timeout, memory_mb, processes)


def run_programs(sources: list[str], timeout: float = 5.0, memory_mb: int = 512, workers: int | None = None,
                 processes: int = PROCESSES, unsafe: bool = False) -> list[dict[str, Any]]:
    """``run_program`` over many sources, ``workers`` (default: one per core) at a time."""
    require(unsafe)
    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        return list(pool.map(lambda s: run_program(s, timeout, memory_mb, processes, unsafe), sources))


def _limits(timeout: float, memory_mb: int, processes: int, guard: bool) -> list[str]:
    values = [memory_mb << 20, _cpu_seconds(timeout), OUTPUT_LIMIT, OPEN_FILES, processes, 0]
    return [*map(str, values), "guard" if guard else "bare"]


def _cpu_seconds(timeout: float) -> int:
    return int(timeout) + 2


def _run_sandboxed(found: Bubblewrap, source: str, timeout: float, memory_mb: int, processes: int) -> dict[str, Any]:
    argv = ["-I", "-S", "-c", BOOTSTRAP, *_limits(timeout, memory_mb, processes, False)]
    cap = ProcessCap(found.cgroups, processes) if found.cgroups else None
    try:
        with tempfile.TemporaryFile() as program, tempfile.TemporaryFile() as err:
            program.write(source.encode("utf-8", "replace"))
            program.flush()
            program.seek(0)
            started = time.perf_counter()
            code = _start_and_wait(found, cap, program.fileno(), err, argv, timeout)
            seconds = time.perf_counter() - started
            stderr = _tail(err)
    finally:
        if cap:
            cap.remove()
    if code is not None and code > 128:
        code = -(code - 128)  # bwrap reports a signal death as 128 + signal
    return {"status": _status(code, stderr), "seconds": round(seconds, 3), "returncode": code, "stderr": stderr.strip()[-500:]}


def _start_and_wait(found: Bubblewrap, cap: ProcessCap | None, program_fd: int, err, argv: list[str], timeout: float) -> int | None:
    """bwrap's exit status, or None when the program was killed at ``timeout`` seconds."""
    started = time.perf_counter()
    info_r, info_w = os.pipe()
    try:
        command = found.command(program_fd, info_w, argv)
        process = subprocess.Popen(cap.wrap(command) if cap else command, env={}, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=err, pass_fds=(program_fd, info_w))
    except BaseException:
        os.close(info_r)
        raise
    finally:
        os.close(info_w)
    init = _init_pidfd(info_r)
    try:
        return process.wait(timeout=max(timeout - (time.perf_counter() - started), 0.01))
    except subprocess.TimeoutExpired:
        _kill(process, init)
        return None
    finally:
        if init is not None:
            os.close(init)


def _init_pidfd(info_r: int) -> int | None:
    """A pidfd of the sandbox's init (checked to be in the new PID namespace), or None."""
    try:
        found = info_pid(info_r)
    finally:
        os.close(info_r)
    if not found:
        return None
    pid, namespace = found
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return None
    try:
        if os.readlink(f"/proc/{pid}/ns/pid") == f"pid:[{namespace}]":
            return pidfd
    except OSError:
        pass
    os.close(pidfd)
    return None


def _kill(process: subprocess.Popen, init: int | None) -> None:
    """Kill the sandbox's init (the kernel then kills the whole PID namespace) and wait until it is gone."""
    if init is not None:
        try:
            signal.pidfd_send_signal(init, signal.SIGKILL)
            process.wait(timeout=10)
            return
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    process.kill()  # bwrap itself: --die-with-parent kills the init, which takes the namespace with it
    process.wait()
    if init is not None:
        select.select([init], [], [], 10)


def _tail(err) -> str:
    err.seek(max(0, os.fstat(err.fileno()).st_size - 2000))
    return err.read().decode("utf-8", "replace")


def _run_unisolated(source: str, timeout: float, memory_mb: int, processes: int) -> dict[str, Any]:
    """``--unsafe-no-sandbox``: rlimits and the guard only, in a temporary folder, killed with its process group."""
    with tempfile.TemporaryDirectory(prefix="aitk-unsafe-") as tmp:
        folder = Path(tmp)
        (folder / "program.py").write_text(source, encoding="utf-8", errors="replace")
        command = [sys.executable, "-I", "-S", "-c", BOOTSTRAP, *_limits(timeout, memory_mb, processes, True)]
        started = time.perf_counter()
        with open(folder / "stderr", "wb") as err:
            process = subprocess.Popen(command, cwd=folder, env={}, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                       stderr=err, start_new_session=True)
            try:
                code = process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait()
                code = None
        seconds = time.perf_counter() - started
        stderr = (folder / "stderr").read_bytes()[-2000:].decode("utf-8", "replace")
    return {"status": _status(code, stderr), "seconds": round(seconds, 3), "returncode": code, "stderr": stderr.strip()[-500:]}


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
