"""--processes N: per-child SO_REUSEPORT sockets, supervision, rolling restarts, merged metrics."""
import os
import signal
import socket
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers import BenchRun, get_json


def child_pids(parent_pid):
    """The pids of a process's children (from /proc)."""
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == parent_pid:
                children.append(int(entry))
    return children


def server_children(server):
    """The worker processes (not the compute pool's forkserver) of a supervised server."""
    workers = []
    for pid in child_pids(server.proc.pid):
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            if b"server" in cmdline.read():
                workers.append(pid)
    return sorted(workers)


def test_two_workers_share_the_port_and_the_metrics(live_server_factory):
    server = live_server_factory("--processes", "2", "--access-log", "off")
    assert "2 processes" in server.lines[-1]
    workers = server_children(server)
    assert len(workers) == 2
    for _ in range(60):
        urllib.request.urlopen(server.url + "/api/hello/spread", timeout=10).read()
    time.sleep(1.3)  # workers publish their numbers once a second
    stats = get_json(server.url + "/api/stats")
    assert sorted(w["pid"] for w in stats["workers"]) == workers
    assert stats["requests"]["total"] >= 60
    assert all(w["requests"] > 0 for w in stats["workers"]), "the kernel spread connections to both"
    with urllib.request.urlopen(server.url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    labels = {sample.labels.get("worker") for family in text_string_to_metric_families(text)
              for sample in family.samples if sample.name == "http_requests_total"}
    assert labels == {"0", "1"}
    server.signal(signal.SIGTERM)
    assert server.wait() == 0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=2)


def test_workers_share_metrics_in_a_private_directory_removed_at_exit(live_server_factory, tmp_path):
    server = live_server_factory("--processes", "2", "--access-log", "off",
                                 env={"TMPDIR": str(tmp_path)})
    (runtime,) = tmp_path.glob("tornado-hps-*")  # a fresh name (mkdtemp), not the parent's pid
    assert runtime.stat().st_mode & 0o777 == 0o700, "only this user may read or plant files"
    deadline = time.monotonic() + 10
    while len(list(runtime.glob("worker-*.json"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(list(runtime.glob("worker-*.json"))) == 2, "each worker publishes its numbers there"
    server.signal(signal.SIGTERM)
    assert server.wait() == 0
    assert not runtime.exists()


def test_a_killed_worker_is_restarted_and_only_its_connections_fail(live_server_factory, tmp_path):
    server = live_server_factory("--processes", "2", "--access-log", "off")
    before = server_children(server)
    load = BenchRun(server.url + "/api/hello/kill", 5, tmp_path / "kill.json")
    time.sleep(1.5)
    os.kill(before[0], signal.SIGKILL)
    result = load.result()
    after = server_children(server)
    assert len(after) == 2 and before[0] not in after and before[1] in after
    # only requests on the killed worker's open connections may fail (at most one each)
    assert result["requests"]["errors_total"] + result["connections"]["failed_total"] <= 20
    assert result["requests"]["responses"].get("200", 0) > 1000
    assert set(result["requests"]["responses"]) == {"200"}
    assert urllib.request.urlopen(server.url + "/healthz", timeout=10).status == 200


def test_sighup_rolls_every_worker_under_load_with_no_failed_request(live_server_factory, tmp_path):
    server = live_server_factory("--processes", "2", "--access-log", "off")
    before = server_children(server)
    load = BenchRun(server.url + "/api/hello/roll", 6, tmp_path / "roll.json")
    time.sleep(1.5)
    server.signal(signal.SIGHUP)
    result = load.result()
    after = server_children(server)
    assert len(after) == 2 and not set(before) & set(after), "every worker was replaced"
    assert result["requests"]["errors_total"] == 0, result["requests"]["errors"]
    assert result["connections"]["failed_total"] == 0, result["connections"]["failed"]
    assert set(result["requests"]["responses"]) == {"200"}
    assert result["requests"]["responses"]["200"] > 1000


def test_children_crashing_in_a_loop_make_the_supervisor_give_up(live_server_factory, tmp_path):
    server = live_server_factory("--processes", "2", "--max-restarts", "2", "--access-log", "off",
                                 env={"TMPDIR": str(tmp_path)})
    deadline = time.monotonic() + 30
    while server.proc.poll() is None and time.monotonic() < deadline:
        for pid in server_children(server):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.3)
    assert server.wait() == 1
    assert "giving up" in server.stderr
    assert not list(tmp_path.glob("tornado-hps-*")), "the runtime directory is removed"
