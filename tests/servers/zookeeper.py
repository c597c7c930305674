"""A real ZooKeeper (Debian's `zookeeper` package), run as a child process.

Debian's zkServer.sh and the `zookeeperd` service both want /etc and /var;
we run QuorumPeerMain directly with a generated standalone zoo.cfg instead,
so the server is our child, listens only on loopback and keeps its data in
a temp dir. stop() and start() keep the port and the data, so a test can
take ZooKeeper away for a while and bring the same ensemble back.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
from pathlib import Path

from . import _process

MAIN_CLASS = "org.apache.zookeeper.server.quorum.QuorumPeerMain"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
# The package's jar names its dependencies in its manifest's Class-Path, all
# under /usr/share/java; only a logging binding is ours to add.
_JAR_DIRS = (Path("/usr/share/java"), Path("/usr/share/zookeeper"))
_LOG_BINDING = "slf4j-simple.jar"

# A short tick makes session expiry and reconnects quick (a session lasts
# between 2 and 20 ticks); 4lw lets readiness be asked without a client
# library; the admin server would take port 8080.
_CONFIG = """\
tickTime=500
initLimit=10
syncLimit=5
dataDir={data_dir}
clientPort={port}
clientPortAddress=127.0.0.1
maxClientCnxns=0
admin.enableServer=false
4lw.commands.whitelist=ruok,srvr,stat,mntr,cons
autopurge.purgeInterval=0
"""


def find_jar() -> Path | None:
    for directory in _JAR_DIRS:
        jar = directory / "zookeeper.jar"
        if jar.is_file():
            return jar
    return None


def find_java() -> str | None:
    return _process.which("/usr/bin/java", "java")


def four_letter(port: int, command: str, host: str = "127.0.0.1", timeout: float = 2.0) -> str:
    """Send a four-letter-word command and return the whole answer ('' if none)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(command.encode("ascii"))
            chunks = []
            while True:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                chunks.append(chunk)
    except OSError:
        return ""
    return b"".join(chunks).decode("utf-8", errors="replace")


class ZooKeeperServer(_process.ChildServer):
    """One standalone ZooKeeper on a free loopback port, data in a temp dir."""

    host = "127.0.0.1"

    def __init__(self, java: str, jar: Path, workdir: Path) -> None:
        self.java = java
        self.jar = jar
        self.base_dir = workdir
        self.data_dir = workdir / "data"
        self.config_path = workdir / "zoo.cfg"
        self.log_path = workdir / "zookeeper.log"
        self.port = _process.free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    # -- lifecycle ----------------------------------------------------------

    def init(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(_CONFIG.format(data_dir=self.data_dir, port=self.port))

    def start(self) -> None:
        if self.running:
            return
        self._proc = _process.spawn(self._argv(), log=self.log_path, user=None, cwd=self.base_dir)
        _process.wait_until(
            self.serving,
            proc=self._proc,
            timeout=START_TIMEOUT,
            what=f"ZooKeeper on port {self.port}",
            log_tail=lambda: _process.tail(self.log_path),
        )

    def stop(self) -> None:
        """Stop the server; its port and data stay for the next start()."""
        if self._proc is None:
            return
        _process.terminate(self._proc, signal.SIGTERM, timeout=STOP_TIMEOUT)
        self._proc = None

    def kill9(self) -> None:
        if self._proc is None:
            return
        _process.terminate(self._proc, signal.SIGKILL, timeout=STOP_TIMEOUT)
        self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        self.kill9()
        shutil.rmtree(self.base_dir, ignore_errors=True)

    # -- state --------------------------------------------------------------

    def serving(self) -> bool:
        """Whether it answers requests: `ruok` only says the process is up,
        `srvr` answers only once the server has loaded its database."""
        return "Mode: standalone" in four_letter(self.port, "srvr")

    def stat(self, command: str = "srvr") -> str:
        return four_letter(self.port, command)

    # -- internals ----------------------------------------------------------

    def _argv(self) -> list[str]:
        classpath = [str(self.jar)]
        binding = self.jar.parent / _LOG_BINDING
        if binding.is_file():
            classpath.append(str(binding))
        return [
            self.java,
            # A small serial-GC heap: the tests keep a handful of znodes.
            "-Xms32m",
            "-Xmx256m",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-Dzookeeper.jmx.log4j.disable=true",
            "-Dorg.slf4j.simpleLogger.defaultLogLevel=info",
            "-Dorg.slf4j.simpleLogger.showDateTime=true",
            "-cp",
            ":".join(classpath),
            MAIN_CLASS,
            str(self.config_path),
        ]

    def __repr__(self) -> str:
        return f"ZooKeeperServer(port={self.port}, data_dir={str(self.data_dir)!r})"


def missing_reason() -> str | None:
    """Why no ZooKeeper can be started here, or None when one can."""
    if find_jar() is None:
        return "ZooKeeper is not installed (apt-get install zookeeper)"
    if find_java() is None:
        return "no java for ZooKeeper (apt-get install default-jre-headless)"
    return None


def start_zookeeper(workdir: Path) -> ZooKeeperServer:
    """Generate a zoo.cfg under `workdir` (created if needed) and start a server."""
    reason = missing_reason()
    if reason is not None:
        raise RuntimeError(reason)
    java, jar = find_java(), find_jar()
    assert java is not None and jar is not None
    server = ZooKeeperServer(java, jar, Path(workdir))
    server.init()
    try:
        server.start()
    except BaseException:
        server.destroy()
        raise
    return server
