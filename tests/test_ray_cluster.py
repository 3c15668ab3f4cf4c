"""A real two-node Ray cluster on this machine (a head and a worker, one CPU each, on 127.0.0.1):
a sweep and study cells spread over both nodes, and a sweep survives losing the worker half-way.

Each node runs `ray start --block` in a session of its own with its own free ports, and is stopped
by killing the processes of that session: nobody else's Ray on this machine is touched.
"""

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT
from test_sweep import last_line, make_learnable_mnist, trial_statuses, wait_for, write_sweep
from test_train import cnnlab

RAY = Path(sys.executable).parent / "ray"
pytestmark = pytest.mark.skipif(not RAY.exists(), reason="Ray is not installed (pip install 'cnnlab[ray]')")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def own_ports() -> list[str]:
    """Ports that default to fixed numbers, chosen free so two clusters on one machine never collide."""
    return [f"--{name}={free_port()}" for name in (
        "node-manager-port", "object-manager-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
        "runtime-env-agent-port", "metrics-export-port",
    )]


def session_pids(leader: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == leader:
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def kill_node(node: subprocess.Popen) -> None:
    """SIGKILL every process of a node we started (raylet, its workers, ...), as if its machine died."""
    for pid in session_pids(node.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    node.wait(timeout=30)


@dataclass
class Cluster:
    address: str
    env: dict
    head: subprocess.Popen
    worker: subprocess.Popen


def start_node(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    cmd = [str(RAY), "start", "--block", "--num-cpus=1", "--node-ip-address=127.0.0.1", "--disable-usage-stats", *own_ports(), *args]
    node = subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    wait_for(lambda: "Ray runtime started" in log.read_text() or node.poll() is not None, 120, f"ray start ({log.name})")
    assert node.poll() is None, log.read_text()[-2000:]
    return node


@pytest.fixture(scope="module")
def cluster():
    temp = Path(tempfile.mkdtemp(prefix="cnnlab-ray-"))  # short: Ray's socket paths live under it
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(
        RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32),  # this cluster's own token
        RAY_health_check_period_ms="500", RAY_health_check_failure_threshold="4",  # notice a lost node in ~2 s
    )
    head = worker = None
    try:
        head = start_node(["--head", f"--port={port}", "--include-dashboard=false", f"--dashboard-port={free_port()}", f"--temp-dir={temp}"], env, temp / "head.log")
        worker = start_node([f"--address=127.0.0.1:{port}"], env, temp / "worker.log")
        yield Cluster(f"127.0.0.1:{port}", env, head, worker)
    finally:
        for node in (worker, head):
            if node is not None:
                kill_node(node)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def learnable(tmp_path_factory):
    return make_learnable_mnist(tmp_path_factory.mktemp("learnable"))


def test_sweep_and_cells_spread_over_both_nodes(cluster, learnable, tmp_path):
    path = write_sweep(tmp_path / "two.yaml", seeds=[0], space={"optimizer.lr": [0.01, 0.02, 0.04, 0.08]},
                       **{"set": {"device": "cpu", "train.batch_size": 20, "train.epochs": 3}})
    out = cnnlab("sweep", path, "--address", cluster.address, "--data-dir", learnable, "--runs-dir", tmp_path / "runs", env=cluster.env)
    assert out.returncode == 0, out.stderr
    trials = pd.read_csv(last_line(out) / "trials.csv")
    assert len(trials) == 4 and set(trials["status"]) == {"completed"}
    assert trials["node"].nunique() == 2 and trials["node_ip"].notna().all()  # both nodes ran some

    # `compare` and `shift-sweep` pass --address to the runner: each cell a Ray task, results in order
    code = (
        "import json\nfrom cnnlab.config import load_config\nfrom cnnlab.runner import Cell, run_cells\n"
        f"cfgs = [load_config({str(ROOT / 'configs/mnist_cnn.yaml')!r}, ['device=cpu', f'seed={{s}}']) for s in range(4)]\n"
        f"results = run_cells([Cell(c, {{}}) for c in cfgs], runs_dir={str(tmp_path / 'cells')!r}, data_dir={str(learnable)!r}, address={cluster.address!r})\n"
        "print(json.dumps([[r.summary['seed'], r.summary['node'], str(r.path)] for r in results]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cluster.env, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    cells = json.loads(out.stdout.strip().splitlines()[-1])
    assert [seed for seed, _, _ in cells] == [0, 1, 2, 3] and len({node for _, node, _ in cells}) == 2
    for _, node, p in cells:  # each cell's own record says where it ran
        summary = json.loads((Path(p) / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["node"] == node and summary["node_ip"]


def running_on(node: subprocess.Popen, runs_dir: Path) -> list[Path]:
    """Trial run directories being trained right now by a process of that node, past their first epoch."""
    found = []
    for p in runs_dir.glob("*/trials/*/summary.json"):
        try:
            s = json.loads(p.read_text())
            if s["status"] == "running" and s["epochs"] >= 1 and os.getsid(s["pid"]) == node.pid:
                found.append(p.parent)
        except (OSError, ValueError, KeyError):
            pass
    return found


def test_sweep_survives_losing_the_worker_node(cluster, learnable, tmp_path):
    path = write_sweep(tmp_path / "lost.yaml", seeds=[0, 1], space={"optimizer.lr": [0.01, 0.02, 0.04]},
                       **{"set": {"device": "cpu", "train.batch_size": 20, "train.epochs": 20}})
    runs = tmp_path / "runs"
    env = {**cluster.env, "RAY_ADDRESS": cluster.address}  # the cluster named by $RAY_ADDRESS this time
    proc = subprocess.Popen([sys.executable, "-m", "cnnlab", "sweep", str(path), "--data-dir", str(learnable), "--runs-dir", str(runs)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: "completed" in trial_statuses(runs) and running_on(cluster.worker, runs), 240, "a trial running on the worker")
        finished = {p.parent: (p.read_text(), (p.parent / "metrics.csv").read_text())
                    for p in runs.glob("*/trials/*/summary.json") if json.loads(p.read_text())["status"] == "completed"}
        victim = running_on(cluster.worker, runs)[0]
        kill_node(cluster.worker)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    sweep_dir = Path(stdout.strip().splitlines()[-1])
    trials = pd.read_csv(sweep_dir / "trials.csv")
    assert len(trials) == 6 and set(trials["status"]) == {"completed"} and set(trials["epochs"]) == {20}
    assert len(list((sweep_dir / "trials").iterdir())) == 6  # the lost trial went on in its own run directory
    assert json.loads((victim / "summary.json").read_text())["epochs"] == 20
    for run_dir, (summary, metrics) in finished.items():  # nothing finished was lost or redone
        assert (run_dir / "summary.json").read_text() == summary and (run_dir / "metrics.csv").read_text() == metrics
    results = pd.read_csv(sweep_dir / "results.csv")
    assert len(results) == 3 and list(results["seeds"]) == [2, 2, 2]


def test_missing_data_on_a_node_fails_the_trial_in_one_line_naming_the_node(cluster, tmp_path):
    path = write_sweep(tmp_path / "nodata.yaml", space={"optimizer.lr": [0.01]}, **{"set": {"device": "cpu", "dataset.download": False}})
    out = cnnlab("sweep", path, "--address", cluster.address, "--data-dir", tmp_path / "absent", "--runs-dir", tmp_path / "runs", env=cluster.env)
    assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
    assert "1 of 1 trial failed" in out.stderr and "MNIST not found" in out.stderr and "on node " in out.stderr
    trials = pd.read_csv(last_line(out) / "trials.csv")
    assert list(trials["status"]) == ["failed"] and trials["node"].notna().all()


def test_trials_larger_than_the_cluster_are_refused_before_a_sweep_directory_exists(cluster, tmp_path):
    path = write_sweep(tmp_path / "big.yaml", space={"optimizer.lr": [0.01]}, resources={"cpus": 1000, "gpus": 0}, **{"set": {"device": "cpu"}})
    out = cnnlab("sweep", path, "--address", cluster.address, "--runs-dir", tmp_path / "runs", env=cluster.env)
    assert out.returncode == 2 and "each trial asks for 1000 CPUs" in out.stderr and out.stderr.count("\n") == 1, out.stderr
    assert not (tmp_path / "runs").exists()
