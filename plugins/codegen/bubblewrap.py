"""The operating-system sandbox for generated code: bubblewrap (``bwrap``, the Flatpak sandbox).

Each program runs in new user, PID, mount, network, IPC, UTS and cgroup namespaces as uid/gid
65534 with no capabilities and no way to make further user namespaces; it sees only the Python
installation and the system libraries, read-only, plus a private size-limited tmpfs as its working
folder, ``/proc`` of its own PID namespace and a minimal ``/dev``; its environment is cleared. The
program is the namespace's init (``--as-pid-1``): when it exits or is killed, the kernel kills every
process it started, whatever they did (``setsid``, double fork). ``--die-with-parent`` ends the
sandbox when aitk dies. The process cap is ``RLIMIT_NPROC``, counted per user namespace (Linux
5.14+); the kernel exempts host root from it, so as root each program gets its own pids cgroup.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

SANDBOX_ID = 65534  # "nobody": the uid and gid inside the sandbox
TMPFS_BYTES = 64 << 20  # the writable working folder, in memory
USERNS = "allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, user.max_user_namespaces > 0)"


@dataclass(frozen=True)
class Bubblewrap:
    """A working ``bwrap``: how to start a program under it and what it isolates."""

    binary: str
    version: tuple[int, ...]
    interpreter: str  # the real Python executable (a venv's base interpreter)
    binds: tuple[tuple[str, ...], ...]  # ("dir", path) read-only binds, ("link", path, target) symlinks
    cgroups: Path | None  # the pids cgroup hierarchy used for the process cap when running as root

    def command(self, program_fd: int, info_fd: int, argv: list[str]) -> list[str]:
        """``bwrap ... INTERPRETER ARGV``: the program file comes from ``program_fd`` (copied to
        ``/tmp/program.py``), bwrap writes its JSON info (the init's host pid) to ``info_fd``."""
        command = [self.binary, "--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
                   "--unshare-cgroup", "--uid", str(SANDBOX_ID), "--gid", str(SANDBOX_ID), "--cap-drop", "ALL",
                   "--die-with-parent", "--new-session", "--as-pid-1", "--hostname", "sandbox"]
        if self.version >= (0, 8):
            command.append("--disable-userns")  # no nested user namespace (bwrap 0.8+)
        for bind in self.binds:
            command += ["--ro-bind", bind[1], bind[1]] if bind[0] == "dir" else ["--symlink", bind[2], bind[1]]
        size = ["--size", str(TMPFS_BYTES)] if self.version >= (0, 7) else []
        command += [*size, "--tmpfs", "/tmp", "--proc", "/proc", "--dev", "/dev", *size, "--tmpfs", "/dev/shm",
                    "--remount-ro", "/dev", "--remount-ro", "/", "--chdir", "/tmp",
                    "--file", str(program_fd), "/tmp/program.py", "--info-fd", str(info_fd),
                    "--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/tmp"]
        return [*command, self.interpreter, *argv]

    @property
    def name(self) -> str:
        return "bubblewrap " + ".".join(map(str, self.version))

    def describe(self) -> str:
        tmpfs = f"private {TMPFS_BYTES >> 20} MB tmpfs /tmp and /dev/shm" if self.version >= (0, 7) else "private tmpfs /tmp and /dev/shm"
        cap = "pids cgroup" if self.cgroups else "RLIMIT_NPROC" if os.geteuid() else "none (root without a writable pids cgroup)"
        shown = ", ".join(b[1] for b in self.binds if b[0] == "dir")
        nested = ", no nested user namespaces" if self.version >= (0, 8) else ""
        return (f"{self.name}: user/pid/mount/net/ipc/uts/cgroup namespaces, uid {SANDBOX_ID}, no capabilities{nested}, "
                f"read-only {shown}, {tmpfs} (cwd /tmp), cleared environment; process cap: {cap}")


class ProcessCap:
    """A pids cgroup holding one program and everything it starts (used when running as root)."""

    def __init__(self, root: Path, processes: int):
        self.path = root / f"aitk-sandbox-{uuid.uuid4().hex[:12]}"
        self.path.mkdir()
        try:
            (self.path / "pids.max").write_text(str(processes))
        except OSError:
            self.remove()
            raise

    def wrap(self, command: list[str]) -> list[str]:
        """``command`` run from a shell that first moves itself into the cgroup (children inherit it)."""
        return ["/bin/sh", "-c", 'echo 0 > "$0" && exec "$@"', str(self.path / "cgroup.procs"), *command]

    def remove(self) -> None:
        try:
            self.path.rmdir()
        except OSError:
            pass  # still busy: a later boot clears it; it holds no process once the namespace is gone


def info_pid(info_fd: int) -> tuple[int, int] | None:
    """(host pid, PID-namespace inode) of the sandbox's init from bwrap's ``--info-fd`` JSON; None if bwrap wrote none."""
    data = b""
    while b"}" not in data:
        chunk = os.read(info_fd, 4096)
        if not chunk:
            return None
        data += chunk
    info = json.loads(data[: data.index(b"}") + 1])
    return info["child-pid"], info["pid-namespace"]


@functools.cache
def find() -> Bubblewrap | str:
    """The working bubblewrap, or one line saying why there is none and how to fix it (probed once)."""
    binary = shutil.which("bwrap")
    if not binary:
        return "bubblewrap (bwrap) is not on the PATH: install it (apt-get install bubblewrap)"
    try:
        shown = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{binary} cannot run ({e}): reinstall it (apt-get install --reinstall bubblewrap)"
    found = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", shown)
    version = tuple(int(n) for n in found.groups(default="0")) if found else (0,)
    interpreter = os.path.realpath(sys.executable)
    return Bubblewrap(binary, version, interpreter, _binds(interpreter), _cgroups() if os.geteuid() == 0 else None)


def _binds(interpreter: str) -> tuple[tuple[str, ...], ...]:
    """The Python installation and the system library folders; top-level lib links stay links."""
    dirs = [os.path.realpath(sys.base_prefix), os.path.dirname(interpreter)]
    links = []
    for top in ("/lib", "/lib64", "/lib32", "/libx32", "/usr/lib", "/usr/lib64", "/usr/lib32", "/usr/libx32"):
        if os.path.islink(top):
            links.append(("link", top, os.readlink(top)))
        elif os.path.isdir(top):
            dirs.append(top)
    kept: list[str] = []
    for path in sorted(set(dirs), key=len):
        if not any(path == k or path.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(path)
    return tuple(("dir", p) for p in kept) + tuple(links)


def _cgroups() -> Path | None:
    """A pids cgroup hierarchy root may make children in (cgroup v1 ``pids``, or v2 with pids enabled)."""
    for root in (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup")):
        if (root / "cgroup.procs").exists() and os.access(root, os.W_OK):
            try:
                ProcessCap(root, 1).remove()
                return root
            except OSError:
                continue
    return None
