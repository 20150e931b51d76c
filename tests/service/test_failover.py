"""Failover behind a real load balancer: Debian's haproxy with the committed deploy/haproxy/haproxy.cfg in
front of two ``python -m service`` replicas on loopback; one replica is killed with SIGKILL under load.

Clients send ``/predict`` with real slices through haproxy; the test asserts that not one of them sees a
failure (haproxy replays what the dead replica refused or dropped, on the survivor), that haproxy logged
replays (so the test exercised them: with retries off, those requests fail), that the killed replica is
marked down, and that the throughput recovers on the survivor. Bounded: 3 s of load on both replicas, 5 s
after the kill, at most ``MAX_REQUESTS`` requests.

haproxy comes from Debian's package, which ``.ci/run`` installs. Where it is missing the test fails under CI
(``CI`` set) and skips on a developer machine, with the same sentence.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bench.process import free_port, wait_for_ready_url

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG = REPO_ROOT / "deploy" / "haproxy" / "haproxy.cfg"
SLICES = [  # real slices, each small enough to be held for a replay (tune.bufsize 256 KiB)
    "sartaj-brain-tumor-mri/Testing/glioma_tumor/image(1).jpg",
    "sartaj-brain-tumor-mri/Testing/meningioma_tumor/image(1).jpg",
    "sartaj-brain-tumor-mri/Testing/no_tumor/image(1).jpg",
    "sartaj-brain-tumor-mri/Testing/pituitary_tumor/image(1).jpg",
]
CLIENTS = 4
BEFORE_S = 3.0  # load on both replicas
AFTER_S = 5.0  # load after the kill
SETTLE_S = 1.0  # after the kill, the time given to haproxy before the survivor's throughput is measured
MAX_REQUESTS = 4000  # all clients together: a bound whatever the speed
MISSING = (
    "The haproxy binary is not on PATH: .ci/run installs it "
    "(apt-get install --no-install-recommends haproxy, Debian's package)."
)
# "actconn/feconn/beconn/srv_conn/retries queue_server/queue_backend" in option httplog's line; a '+' before
# the retries says the request was redispatched to another server
HTTPLOG = re.compile(
    r" (?P<backend>\S+)/(?P<server>\S+) \S+ (?P<status>\d{3}) .* \d+/\d+/\d+/\d+/(?P<retries>\+?\d+) \d+/\d+ "
    r'"(?P<method>[A-Z]+) (?P<path>\S+)'
)


@dataclass(frozen=True)
class Call:
    """One request as its client saw it: when it was sent, when it ended, and how."""

    start: float
    end: float
    outcome: int | str  # the HTTP status, or the client's error


@dataclass(frozen=True)
class Replica:
    process: subprocess.Popen[bytes]
    port: int
    log: Path


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="module")
def haproxy_binary() -> str:
    """The path of ``haproxy`` (Debian installs it in /usr/sbin); a failure under CI, a skip elsewhere."""
    path = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")
    if path is None:
        if _in_ci():
            pytest.fail(MISSING)
        pytest.skip(MISSING)
    return path


def render_config(frontend: int, stats: int, replicas: list[int]) -> str:
    """The committed haproxy.cfg with only its addresses replaced by these loopback ports."""
    text = CONFIG.read_text()
    replacements = {
        "bind 127.0.0.1:8080": f"bind 127.0.0.1:{frontend}",
        "bind 127.0.0.1:8404": f"bind 127.0.0.1:{stats}",
        "server mri-1 127.0.0.1:8001": f"server mri-1 127.0.0.1:{replicas[0]}",
        "server mri-2 127.0.0.1:8002": f"server mri-2 127.0.0.1:{replicas[1]}",
    }
    for old, new in replacements.items():
        assert text.count(old) == 1, f"{CONFIG} no longer has exactly one {old!r}: update this test"
        text = text.replace(old, new)
    return text


@contextlib.contextmanager
def running_replicas(model_repository: Path, folder: Path, count: int) -> Iterator[list[Replica]]:
    """``count`` ready ``python -m service`` processes on free loopback ports (started together)."""
    replicas = []
    for index in range(count):
        port, log = free_port(), folder / f"replica-{index + 1}.log"
        env = {
            **os.environ,
            "MRI_MODEL_REPOSITORY": str(model_repository),
            "MRI_HOST": "127.0.0.1",
            "MRI_PORT": str(port),
        }
        with log.open("w") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", "service"], cwd=REPO_ROOT, env=env, stderr=stderr
            )
        replicas.append(Replica(process, port, log))
    try:
        for replica in replicas:
            url = f"http://127.0.0.1:{replica.port}/health/ready"
            wait_for_ready_url(replica.process, url, replica.log, timeout_s=120)
        yield replicas
    finally:
        for replica in replicas:
            if replica.process.poll() is None:
                replica.process.send_signal(signal.SIGTERM)
        for replica in replicas:
            try:
                replica.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                replica.process.kill()
                replica.process.wait()


@contextlib.contextmanager
def running_haproxy(binary: str, config: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """haproxy in the foreground with ``config`` (checked first), its stdout and stderr in ``log``."""
    check = subprocess.run([binary, "-c", "-f", str(config)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    with log.open("w") as output:
        process = subprocess.Popen(
            [binary, "-db", "-f", str(config)], stdout=output, stderr=subprocess.STDOUT
        )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def server_stats(stats_url: str) -> dict[str, dict[str, str]]:
    """haproxy's statistics of the replicas' backend, by server name (``status``, ``stot``, ...)."""
    text = httpx.get(f"{stats_url}/stats;csv", timeout=5).text.removeprefix("# ")
    rows = csv.DictReader(io.StringIO(text))
    return {row["svname"]: row for row in rows if row["pxname"] == "mri_replicas"}


def wait_for_balancer(base: str, stats_url: str, timeout_s: float = 20.0) -> None:
    """Until haproxy answers readiness and reports both replicas UP."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            stats = server_stats(stats_url)
            ready = httpx.get(f"{base}/health/ready", timeout=2).status_code == 200
            if ready and all(stats.get(name, {}).get("status") == "UP" for name in ("mri-1", "mri-2")):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"haproxy did not report both replicas up within {timeout_s:g} s")


class Budget:
    """How many requests the clients may still send, all together."""

    def __init__(self, requests: int) -> None:
        self.left = requests
        self.lock = threading.Lock()

    def take(self) -> bool:
        with self.lock:
            self.left -= 1
            return self.left >= 0


def predict_until(
    base: str, slices: list[tuple[str, bytes]], index: int, deadline: float, calls: list[Call], budget: Budget
) -> None:
    """One client: /predict through the balancer, the slices in turn, until ``deadline`` or out of budget."""
    with httpx.Client(base_url=base, timeout=30) as client:
        number = 0
        while time.monotonic() < deadline and budget.take():
            name, data = slices[(index + number) % len(slices)]
            number += 1
            start = time.monotonic()
            try:
                answer = client.post("/predict", files={"file": (Path(name).name, data, "image/jpeg")})
                outcome: int | str = answer.status_code
            except httpx.HTTPError as error:
                outcome = f"{type(error).__name__}: {error}"
            calls.append(Call(start, time.monotonic(), outcome))


def rate(calls: list[Call], start: float, end: float) -> float:
    """Answers per second that ended within [start, end)."""
    return sum(1 for call in calls if start <= call.end < end) / (end - start)


def test_killing_a_replica_under_load_fails_no_request(
    haproxy_binary: str, model_repository: Path, data_root: Path, tmp_path: Path
) -> None:
    slices = [(path, (data_root / path).read_bytes()) for path in SLICES]
    assert all(len(data) < 200 * 1024 for _, data in slices)  # held whole for a replay (tune.bufsize)
    frontend, stats_port = free_port(), free_port()
    base, stats_url = f"http://127.0.0.1:{frontend}", f"http://127.0.0.1:{stats_port}"
    config = tmp_path / "haproxy.cfg"
    haproxy_log = tmp_path / "haproxy.log"
    with running_replicas(model_repository, tmp_path, 2) as replicas:
        config.write_text(render_config(frontend, stats_port, [replica.port for replica in replicas]))
        with running_haproxy(haproxy_binary, config, haproxy_log):
            wait_for_balancer(base, stats_url)
            calls: list[Call] = []
            budget = Budget(MAX_REQUESTS)
            started = time.monotonic()
            deadline = started + BEFORE_S + AFTER_S
            clients = [
                threading.Thread(target=predict_until, args=(base, slices, index, deadline, calls, budget))
                for index in range(CLIENTS)
            ]
            for client in clients:
                client.start()
            time.sleep(BEFORE_S)
            before_kill = server_stats(stats_url)
            killed = time.monotonic()
            os.kill(replicas[0].process.pid, signal.SIGKILL)  # mri-1: no drain, connections reset
            for client in clients:
                client.join(timeout=AFTER_S + 30)
            ended = time.monotonic()
            after_kill = server_stats(stats_url)
            assert replicas[0].process.wait(timeout=5) == -signal.SIGKILL
    # read once haproxy has stopped: a request's line is written after its answer reached the client
    log_lines = haproxy_log.read_text().splitlines()

    # not one failed request, as the clients saw it and as haproxy logged it
    failed = [call for call in calls if call.outcome != 200]
    assert not failed, f"{len(failed)} of {len(calls)} requests failed: {failed[:5]}\n" + "\n".join(
        log_lines[-20:]
    )
    logged = [match for line in log_lines if (match := HTTPLOG.search(line)) and match["path"] == "/predict"]
    assert len(logged) == len(calls), f"haproxy logged {len(logged)} /predict, the clients sent {len(calls)}"
    assert {match["status"] for match in logged} == {"200"}

    # both replicas served before the kill; mri-1 is down after it, and mri-2 answered everything since
    assert int(before_kill["mri-1"]["stot"]) > 0 and int(before_kill["mri-2"]["stot"]) > 0, before_kill
    assert after_kill["mri-1"]["status"].startswith("DOWN") and after_kill["mri-2"]["status"] == "UP"

    # the replays: requests that mri-1 refused or dropped, retried on mri-2 (with retries off, they fail)
    replayed = [match for match in logged if match["retries"] != "0"]
    assert replayed, "no request was replayed: the kill did not hit a request, and the test proved nothing"
    assert all(match["server"] == "mri-2" for match in replayed)

    # throughput: before the kill (both replicas, after a warm-up second) and on the survivor alone
    before = rate(calls, started + 1.0, killed)
    survivor = rate(calls, killed + SETTLE_S, ended)
    assert survivor >= 0.5 * before, (
        f"survivor: {survivor:.1f} answers/s against {before:.1f} before the kill"
    )
    ends = sorted(call.end for call in calls if killed - 1.0 < call.end)
    stalled = max((later - earlier for earlier, later in itertools.pairwise(ends)), default=0.0)
    print(
        f"\nfailover: {len(calls)} /predict through haproxy, {len(failed)} failed; {len(replayed)} replayed "
        f"on the survivor; {before:.1f} answers/s on two replicas, {survivor:.1f} answers/s on the survivor "
        f"from {SETTLE_S:g} s after the kill; longest gap between two answers around the kill {stalled:.3f} s"
    )
