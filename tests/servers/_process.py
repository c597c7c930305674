"""Process plumbing shared by the server fixtures.

Every server is a child of the test process, in its own process group, with a
parent-death signal, and registered for an atexit kill: a test run that is
interrupted, fails, or is killed outright must not leave servers behind.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1
_live: dict[int, subprocess.Popen[bytes]] = {}


def free_port() -> int:
    """A loopback TCP port nobody listens on right now.

    The kernel picks from the ephemeral range, which is small-ish but shared
    by every concurrent test run on the machine, so collisions stay unlikely.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def port_accepts(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def service_user(name: str) -> str | None:
    """The system user a server must run as, or None for "whoever we are".

    Only root needs a different user (initdb refuses to run as root); an
    ordinary developer account runs its servers as itself.
    """
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            check=True,
            capture_output=True,
        )
    return name


def chown_to(path: Path, user: str | None) -> None:
    if user is None:
        return
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)


def user_can_traverse(path: Path, user: str | None) -> bool:
    """Whether `user` may reach `path` through every directory above it."""
    if user is None:
        return True
    entry = pwd.getpwnam(user)
    groups = {g for g in os.getgrouplist(user, entry.pw_gid)}
    for parent in [path, *path.parents]:
        st = parent.stat()
        if st.st_uid == entry.pw_uid:
            bit = 0o100
        elif st.st_gid in groups:
            bit = 0o010
        else:
            bit = 0o001
        if not st.st_mode & bit:
            return False
    return True


class ChildServer:
    """What every server the tests start as a child process can say about itself."""

    _proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc is not None else None


def _arm_parent_death_signal(sig: int) -> Callable[[], None] | None:
    """A preexec hook that kills the child when the test process dies.

    It runs after subprocess has switched uid, which matters: the kernel
    clears the parent-death signal on a credential change.
    """
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)

    def arm() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)

    return arm


def spawn(
    argv: Sequence[str],
    *,
    log: Path,
    user: str | None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    death_signal: int = signal.SIGKILL,
) -> subprocess.Popen[bytes]:
    """Start a long-running server process, output appended to `log`."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            user=user,
            group=None if user is None else pwd.getpwnam(user).pw_gid,
            extra_groups=None if user is None else [],
            process_group=0,
            preexec_fn=_arm_parent_death_signal(death_signal),
        )
    _live[proc.pid] = proc
    return proc


def run(
    argv: Sequence[str],
    *,
    user: str | None,
    env: Mapping[str, str] | None = None,
    timeout: float = 120.0,
    input_text: str | None = None,
) -> str:
    """Run a short command (initdb, psql) and fail loudly with its output."""
    result = subprocess.run(
        list(argv),
        input=input_text,
        capture_output=True,
        text=True,
        env=dict(env) if env is not None else None,
        user=user,
        group=None if user is None else pwd.getpwnam(user).pw_gid,
        extra_groups=None if user is None else [],
        timeout=timeout,
        stdin=None if input_text is not None else subprocess.DEVNULL,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} exited {result.returncode}\n"
            f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
        )
    return result.stdout


def _descendants(pid: int) -> list[int]:
    # Postgres backends call setsid(), so killing the postmaster's process
    # group misses them; psutil sees them through the parent links instead.
    try:
        import psutil
    except ImportError:
        return []
    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def _signal(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def terminate(proc: subprocess.Popen[bytes], sig: int, timeout: float) -> int | None:
    """Send `sig`, wait up to `timeout`, then SIGKILL the process tree.

    Returns the exit status when the process ended by itself, None if it
    had to be killed.
    """
    if proc.poll() is not None:
        _live.pop(proc.pid, None)
        return proc.returncode
    children = _descendants(proc.pid)
    os.kill(proc.pid, sig)
    try:
        code: int | None = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        children = sorted(set(children) | set(_descendants(proc.pid)))
        _signal(proc.pid, signal.SIGKILL)
        proc.wait()
        code = None
    for child in children:
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _live.pop(proc.pid, None)
    return code


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_live.values()):
        terminate(proc, signal.SIGKILL, timeout=5.0)


def wait_until(
    ready: Callable[[], bool],
    *,
    proc: subprocess.Popen[bytes],
    timeout: float,
    what: str,
    log_tail: Callable[[], str],
) -> None:
    """Poll `ready` until it holds, the process dies, or time runs out."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        if proc.poll() is not None:
            _live.pop(proc.pid, None)
            raise RuntimeError(f"{what} exited with status {proc.returncode} while starting\n{log_tail()}")
        if ready():
            return
        if time.monotonic() > deadline:
            terminate(proc, signal.SIGKILL, timeout=5.0)
            raise RuntimeError(f"{what} not ready after {timeout:.0f}s\n{log_tail()}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    return f"--- last lines of {path} ---\n" + "\n".join(text.splitlines()[-lines:])


def which(*candidates: str) -> str | None:
    for candidate in candidates:
        if os.path.isabs(candidate):
            if os.access(candidate, os.X_OK):
                return candidate
        else:
            found = shutil.which(candidate, path=os.environ.get("PATH", "") + ":/usr/sbin:/usr/bin:/sbin")
            if found:
                return found
    return None
