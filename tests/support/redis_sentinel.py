"""A Redis primary, a replica and three Sentinels of a test's own, on free local ports.

`redis-server` must be on the PATH. Every server is started and stopped by its PID; data and
logs live in the directory given. The primary and the replica require `PASSWORD`; the Sentinels
themselves have none.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redis

from tests.support.services import free_port

MASTER = "vamu-test"
PASSWORD = "sentinel-test-pw-41c7"


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


class RedisServer:
    """One redis-server (data node or Sentinel) of the test's own, stopped by its PID."""

    def __init__(self, name: str, directory: Path, argv: list[str]) -> None:
        self.name = name
        self.directory = directory
        self.argv = argv
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / f"{self.name}.log", "ab") as log:
            self.process = subprocess.Popen(self.argv, cwd=self.directory, stdout=log,
                                            stderr=subprocess.STDOUT)
        return self

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


class SentinelCluster:
    """A primary, a replica and three Sentinels watching them, all on 127.0.0.1."""

    def __init__(self, directory: Path, master: str = MASTER) -> None:
        self.directory = directory
        self.master = master
        self.primary_port, self.replica_port = free_port(), free_port()
        self.sentinel_ports = [free_port() for _ in range(3)]
        data = ["--bind", "127.0.0.1", "--appendonly", "yes", "--appendfsync", "always",
                "--save", "", "--requirepass", PASSWORD, "--masterauth", PASSWORD]
        self.primary = RedisServer("primary", directory / "primary", [
            "redis-server", "--port", str(self.primary_port), *data])
        self.replica = RedisServer("replica", directory / "replica", [
            "redis-server", "--port", str(self.replica_port), *data,
            "--replicaof", "127.0.0.1", str(self.primary_port)])
        self.sentinels = [RedisServer(f"sentinel-{port}", directory / f"sentinel-{port}", [
            "redis-server", str(directory / f"sentinel-{port}" / "sentinel.conf"), "--sentinel"])
            for port in self.sentinel_ports]

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", port) for port in self.sentinel_ports]

    @property
    def env_value(self) -> str:
        return ",".join(f"{host}:{port}" for host, port in self.addresses)

    def url(self, port: int, db: int) -> str:
        return f"redis://:{PASSWORD}@127.0.0.1:{port}/{db}"

    def start(self) -> SentinelCluster:
        self.primary.start()
        self.replica.start()
        replica = redis.Redis(port=self.replica_port, password=PASSWORD)
        try:
            assert wait_until(lambda: _info(replica).get("master_link_status") == "up", 30), \
                "the replica did not sync with the primary"
        finally:
            replica.close()
        for port, server in zip(self.sentinel_ports, self.sentinels, strict=True):
            server.directory.mkdir(parents=True, exist_ok=True)
            (server.directory / "sentinel.conf").write_text(
                f"port {port}\nbind 127.0.0.1\ndir {server.directory}\n"
                f"sentinel monitor {self.master} 127.0.0.1 {self.primary_port} 2\n"
                f"sentinel auth-pass {self.master} {PASSWORD}\n"
                f"sentinel down-after-milliseconds {self.master} 1000\n"
                f"sentinel failover-timeout {self.master} 10000\n"
                f"sentinel parallel-syncs {self.master} 1\n")
            server.start()
        # Ready when every Sentinel knows the replica and the two other Sentinels.
        assert wait_until(self._all_sentinels_know_each_other, 30), "Sentinels not ready"
        return self

    def _all_sentinels_know_each_other(self) -> bool:
        for _, port in self.addresses:
            client = redis.Redis(port=port, decode_responses=True)
            try:
                master = client.execute_command("SENTINEL", "MASTER", self.master)
                fields = dict(zip(master[::2], master[1::2], strict=True)) \
                    if isinstance(master, list) else master
                if int(fields["num-slaves"]) < 1 or int(fields["num-other-sentinels"]) < 2:
                    return False
            except (redis.RedisError, KeyError):
                return False
            finally:
                client.close()
        return True

    def primary_port_now(self) -> int | None:
        """The primary's port as a majority of the Sentinels name it."""
        seen: list[int] = []
        for _, port in self.addresses:
            client = redis.Redis(port=port, socket_timeout=1)
            try:
                answer = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master)
                seen.append(int(answer[1]))
            except (redis.RedisError, TypeError, IndexError):
                pass
            finally:
                client.close()
        best = max(set(seen), key=seen.count, default=None)
        return best if best is not None and seen.count(best) >= 2 else None

    def stop(self) -> None:
        for server in [*self.sentinels, self.replica, self.primary]:
            server.stop()


def _info(client: redis.Redis) -> dict[str, str]:
    try:
        return {k: str(v) for k, v in client.info("replication").items()}
    except redis.RedisError:
        return {}
