"""StopSignals: every stop signal is seen, whatever the main thread is doing when it lands."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

from cdc.stopping import StopSignals

# The main thread spends nearly all its time inside the stop event's own wait,
# holding its lock on the way in and out: where a handler that set the event
# itself would wait for that lock forever (1 child in 12 hung, on average, tried).
WAITING_ON_THE_EVENT = textwrap.dedent("""
    import sys
    from cdc.stopping import StopSignals

    with StopSignals() as signals:
        print("ready", flush=True)
        while not signals.stop.wait(0.00001):
            pass
        while not signals.abort.wait(0.00001):
            pass
    print("stopped", signals.received, flush=True)
""")


def _start(script: str) -> subprocess.Popen[str]:
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    assert child.stdout.readline() == "ready\n"
    return child


def test_a_stop_and_an_abort_are_never_lost_while_the_main_thread_waits_on_the_event() -> None:
    children = [_start(WAITING_ON_THE_EVENT) for _ in range(24)]
    try:
        for child in children:
            child.send_signal(signal.SIGTERM)
        time.sleep(0.05)
        for child in children:
            child.send_signal(signal.SIGINT)
        for child in children:
            out, _ = child.communicate(timeout=30)
            assert child.returncode == 0
            assert out == "stopped 2\n"
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()


def test_until_started_a_signal_ends_the_process_with_the_given_line() -> None:
    script = textwrap.dedent("""
        import time
        from cdc.stopping import StopSignals

        with StopSignals(exit_while_starting="stopped while starting") as signals:
            print("ready", flush=True)
            time.sleep(60)  # a connection being made: only the main thread can cut it short
        print("not reached", flush=True)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    assert child.stdout is not None and child.stdout.readline() == "ready\n"
    child.send_signal(signal.SIGTERM)
    out, err = child.communicate(timeout=30)
    assert (child.returncode, out, err) == (0, "", "stopped while starting\n")


def test_after_started_the_first_signal_stops_and_the_next_aborts_with_a_callback() -> None:
    aborted: list[bool] = []
    with StopSignals(on_abort=lambda: aborted.append(True), exit_while_starting="unused") as signals:
        signals.started()
        os.kill(os.getpid(), signal.SIGTERM)
        assert signals.stop.wait(10)
        assert not signals.abort.is_set()
        os.kill(os.getpid(), signal.SIGINT)
        assert signals.abort.wait(10)
    assert aborted == [True]
    assert signals.received == 2


def _wakeup_fd() -> int:
    fd = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(fd)
    return fd


def test_leaving_restores_the_handlers_and_the_wakeup_fd_it_replaced() -> None:
    handlers, fd = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)), _wakeup_fd()
    with StopSignals():
        assert signal.getsignal(signal.SIGTERM) is not handlers[0]
        assert _wakeup_fd() != fd
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == handlers
    assert _wakeup_fd() == fd
