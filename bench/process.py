"""A ``python -m service`` process on loopback for the benchmark and the soak, and memory readings."""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from bench.errors import BenchError

READY_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class ServiceProcess:
    """A running service: its base URL, process id and the file its stderr goes to."""

    url: str
    pid: int
    log: Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def running_service(repository: Path, env: Mapping[str, str] | None = None) -> Iterator[ServiceProcess]:
    """Start ``python -m service`` on a free loopback port, wait until ready; SIGTERM it afterwards."""
    port = free_port()
    environment = {
        **os.environ,
        "MRI_MODEL_REPOSITORY": str(repository),
        "MRI_HOST": "127.0.0.1",
        "MRI_PORT": str(port),
        **(env or {}),
    }
    with tempfile.TemporaryDirectory(prefix="mri-bench-") as folder:
        log = Path(folder) / "service.log"
        with log.open("w") as stderr:
            process = subprocess.Popen([sys.executable, "-m", "service"], env=environment, stderr=stderr)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for_ready_url(process, f"{url}/health/ready", log)
            yield ServiceProcess(url=url, pid=process.pid, log=log)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_for_ready_url(
    process: subprocess.Popen[bytes],
    ready_url: str,
    log: Path,
    *,
    timeout_s: float = READY_TIMEOUT_S,
    what: str = "The service",
) -> None:
    """Poll ``ready_url`` until it answers 200; :class:`BenchError` (with the log's tail) when ``process``
    exits first or ``timeout_s`` pass."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"{what} exited with status {process.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(ready_url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise BenchError(f"{what} was not ready after {timeout_s:.0f} s: {log.read_text()[-2000:]}")


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid`` now."""
    return int(psutil.Process(pid).memory_info().rss)


def peak_rss_bytes(pid: int) -> int | None:
    """Highest resident set size process ``pid`` has had (Linux ``VmHWM``); None where unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def own_peak_rss_bytes() -> int:
    """Highest resident set size of this process so far (``ru_maxrss`` is in KiB on Linux)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def mib(size: int | None) -> float | None:
    return None if size is None else round(size / 2**20, 1)
