"""Cluster tests: `dagwire sweep --address` on a real Ray cluster of several nodes on this machine.

Each node is a `ray start --block` process of the environment dagwire is installed in (the way the
README's "On a cluster" gets dagwire onto nodes), with 1 CPU, its own temp dir, and token
authentication on; every address given is a loopback one (Ray itself advertises the machine's own
IP for its nodes). Every process a test starts is stopped by its session id, never by `ray stop`,
which would stop every Ray on the machine. Datasets are tiny synthetic npz files: mechanics only.

Select them with `pytest tests/test_cluster.py` (or `-k cluster`).
"""

import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import session_pids, write_npz

from dagwire import sweep as sweep_module
from dagwire.data import cache_dir
from dagwire.errors import DagwireError

pytestmark = pytest.mark.cluster

RAY = Path(sys.executable).with_name("ray")
TINY = ["--nodes", "6", "--stages", "2", "--channels", "2", "--batch-size", "16", "--quiet"]
RUN_FILES = ("graph.json", "thresholds.csv", "features.json", "dynamics.json", "status.json", "metrics.jsonl",
             "edge_history.npy", "weights.pt")
NOT_SHARED = "is not on a filesystem this node shares"
EPOCHS = 30  # the killed sweep's runs: long enough (about 0.2 s an epoch) to be caught mid-training

pytestmark = pytest.mark.skipif(not RAY.exists() or not Path("/proc/self/stat").exists(),
                                reason="needs Ray's `ray` command beside this Python, and Linux /proc")


# ---------------------------------------------------------------------------------------------
# Processes: started in their own sessions, stopped by session id


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_session(sid: int) -> None:
    """SIGTERM every process of a session this test started, SIGKILL what is left after 3 s."""
    for sig, wait in ((signal.SIGTERM, 3), (signal.SIGKILL, 30)):
        deadline = time.monotonic() + wait
        while (pids := session_pids(sid)) and time.monotonic() < deadline:
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            time.sleep(0.2)
        if not pids:
            return
    assert not session_pids(sid), f"processes of session {sid} survived SIGKILL"


def clean_env(home: Path, **extra: str) -> dict:
    """This environment without any RAY_ setting but workers' niceness (conftest), HOME elsewhere, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(HOME=str(home), DAGWIRE_CACHE=str(cache_dir()), RAY_USAGE_STATS_ENABLED="0",
               RAY_worker_niceness=os.environ["RAY_worker_niceness"])
    env.update(extra)
    return env


class Cluster:
    """A head and worker nodes, each `ray start --block` in its own session, 1 CPU each."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.token = secrets.token_hex(16)
        (root / "home").mkdir(parents=True, exist_ok=True)
        self.env = clean_env(root / "home", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token)
        self.nodes: list[subprocess.Popen] = []
        self.temp_dirs: list[str] = []

    def start_node(self, head: bool = False, prefix: tuple = ()) -> subprocess.Popen:
        temp = tempfile.mkdtemp(prefix="dw-ray-")  # short: Ray's socket paths must fit in 107 bytes
        self.temp_dirs.append(temp)
        args = [*prefix, str(RAY), "start", "--block", "--num-cpus", "1", "--object-store-memory", str(100 * 2**20),
                "--temp-dir", temp, "--disable-usage-stats", "--dashboard-agent-listen-port", str(free_port())]
        if head:
            args += ["--head", "--node-ip-address", "127.0.0.1", "--port", str(self.port), "--include-dashboard",
                     "false"]
            if importlib.util.find_spec("grpc") is not None:  # ray[client]: the head also serves Ray Client
                args += ["--ray-client-server-port", str(free_port())]
        else:
            args += ["--address", self.address]
        log_path = self.root / f"node{len(self.nodes)}.log"
        with open(log_path, "w") as log:
            process = subprocess.Popen(args, env=self.env, start_new_session=True, stdout=log,
                                       stderr=subprocess.STDOUT)
        self.nodes.append(process)
        if head:  # the GCS listens before anything can join or connect
            deadline = time.monotonic() + 120
            while True:
                assert process.poll() is None, f"the head exited: {log_path.read_text()[-3000:]}"
                assert time.monotonic() < deadline, f"the head never listened: {log_path.read_text()[-3000:]}"
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.2)
        return process

    def alive_nodes(self, count: int, timeout: float = 120) -> list[str]:
        """The ids of the alive nodes, once there are exactly `count` (a driver of its own asks Ray)."""
        script = ("import json, sys, time, ray\n"
                  "ray.init(address=sys.argv[1], log_to_driver=False, logging_level='ERROR')\n"
                  "deadline = time.monotonic() + float(sys.argv[3])\n"
                  "while True:\n"
                  "    alive = sorted(n['NodeID'] for n in ray.nodes() if n['Alive'])\n"
                  "    if len(alive) == int(sys.argv[2]) or time.monotonic() > deadline:\n"
                  "        break\n"
                  "    time.sleep(0.2)\n"
                  "print(json.dumps(alive))\n")
        result = subprocess.run([sys.executable, "-c", script, self.address, str(count), str(timeout)],
                                env=self.env, capture_output=True, text=True, timeout=timeout + 60)
        assert result.returncode == 0, result.stderr[-2000:]
        alive = json.loads(result.stdout.strip().splitlines()[-1])
        assert len(alive) == count, f"{len(alive)} nodes alive, waited for {count}; logs in {self.root}"
        return alive

    def stop_node(self, process: subprocess.Popen) -> None:
        stop_session(process.pid)
        process.wait(timeout=30)

    def stop(self) -> None:
        for process in self.nodes:
            self.stop_node(process)
        for temp in self.temp_dirs:
            shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head and one worker node, token authentication on; stopped after the module."""
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        c.start_node(head=True)
        c.start_node()
        c.ids = c.alive_nodes(2)
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data").resolve()
    return {"a": write_npz(root / "a.npz", 0), "b": write_npz(root / "b.npz", 1)}


def dagwire_sweep(env: dict, *args, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dagwire.cli", "sweep", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=timeout)


def mtimes(run_dirs, names=("status.json", "graph.json")) -> dict:
    return {(str(d), n): (Path(d) / n).stat().st_mtime_ns for d in run_dirs for n in names}


def mount_namespace_prefix(tmp_path: Path) -> tuple | None:
    """`unshare` arguments that give a process its own mount table (None where that is not allowed)."""
    if shutil.which("unshare") is None:
        return None
    prefix = ("unshare", "--mount", *(() if os.geteuid() == 0 else ("--map-root-user",)))
    probe = tmp_path / "probe"
    probe.mkdir()
    try:
        ok = subprocess.run([*prefix, "sh", "-c", 'mount -t tmpfs probe "$0"', str(probe)],
                            capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    return prefix if ok else None


# ---------------------------------------------------------------------------------------------
# The marker: a task touches DIR only when it reads the token the driver wrote there


def test_cluster_marker_check_reads_only_and_names_the_node_and_dir(tmp_path):
    missing = tmp_path / "elsewhere" / "sweep"
    with pytest.raises(DagwireError, match=NOT_SHARED) as caught:
        sweep_module.check_marker(missing, "0" * 32, grace=0)
    message = str(caught.value)
    assert str(missing) in message and "no such directory here" in message and "NFS" in message
    assert sweep_module.node_here()["ray_node"] in message and "\n" not in message
    assert not (tmp_path / "elsewhere").exists()  # nothing created

    here = tmp_path / "sweep"
    here.mkdir()
    with pytest.raises(DagwireError, match=f"{NOT_SHARED}.*no .dagwire-marker in it"):
        sweep_module.check_marker(here, "0" * 32, grace=0)
    token = sweep_module.write_marker(here)
    sweep_module.check_marker(here, token)  # the driver's DIR: passes
    newer = sweep_module.write_marker(here)  # a sweep started since
    assert newer != token
    with pytest.raises(DagwireError, match="not this sweep's"):
        sweep_module.check_marker(here, token, grace=0)
    assert sorted(p.name for p in here.iterdir()) == [".dagwire-marker"]
    # A marker that shows up late (a shared filesystem's caches) is still found within the grace period.
    late = tmp_path / "late"
    late.mkdir()
    writer = threading.Timer(0.5, lambda: (late / ".dagwire-marker").write_text("1" * 32 + "\n"))
    writer.start()
    try:
        sweep_module.check_marker(late, "1" * 32, grace=30)
    finally:
        writer.join()


def test_cluster_task_that_cannot_see_dir_fails_its_runs_and_writes_nothing(tmp_path, tiny_npz):
    plan = sweep_module.make_plan(datasets=tiny_npz, seeds="0-1", nodes=6, stages=2, channels=2, epochs=1)
    sweep_dir = tmp_path / "not-here" / "sweep"
    jobs = [sweep_module.Job(plan.run_config(d, s).to_dict(), str(sweep_dir / rel), cpus=1, check_kernels=False,
                             sweep_dir=str(sweep_dir), marker="0" * 32)
            for d, s, rel in plan.runs()]
    results = sweep_module.run_task(jobs)
    assert [(r["status"], r["seed"], r["record_on_driver"]) for r in results] == [("failed", 0, True),
                                                                                   ("failed", 1, True)]
    assert all(NOT_SHARED in r["error"] and str(sweep_dir) in r["error"] and r["ray_node"] for r in results)
    assert not (tmp_path / "not-here").exists()


# ---------------------------------------------------------------------------------------------
# Token authentication


def test_cluster_without_the_right_token_is_one_line_and_exit_2(cluster, data, tmp_path):
    home = tmp_path / "home"  # no ~/.ray/auth_token here
    home.mkdir()
    cases = [
        ({}, "requires token authentication; set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN="),
        ({"RAY_AUTH_MODE": "token"}, "RAY_AUTH_MODE=token but no authentication token found; set RAY_AUTH_TOKEN="),
        ({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "f" * 32}, "refused the token from RAY_AUTH_TOKEN"),
        ({"RAY_AUTH_TOKEN": cluster.token}, "set RAY_AUTH_MODE=token as well"),
    ]
    for extra, expected in cases:
        out = tmp_path / "sweep"
        result = dagwire_sweep(clean_env(home, **extra), "--address", cluster.address, "--datasets", data["a"],
                               "--seeds", "0", *TINY, "--epochs", "1", "--out", out, timeout=120)
        lines = result.stderr.splitlines()
        assert result.returncode == 2, (extra, result.stderr[-3000:])
        # One line, not Ray's: no log lines of retried connections.
        assert len(lines) == 1 and lines[0].startswith(f"dagwire: error: --address {cluster.address}: "), \
            (extra, result.stderr[-3000:])
        assert expected in lines[0], (extra, lines[0])
        assert not out.exists()  # refused before anything was written


# ---------------------------------------------------------------------------------------------
# A sweep over several nodes


def epochs_done(run: Path) -> int:
    try:
        return len((run / "metrics.jsonl").read_text().splitlines())
    except FileNotFoundError:
        return 0


def test_cluster_sweep_spreads_over_nodes_and_resumes_after_a_kill(cluster, data, tmp_path):
    out = tmp_path / "sweep"
    args = ["--address", cluster.address, "--datasets", f"{data['a']},{data['b']}", "--seeds", "0-1", *TINY,
            "--epochs", str(EPOCHS), "--out", out]
    home = tmp_path / "home"
    home.mkdir()
    env = clean_env(home, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=cluster.token)
    # Two runs at a time, one on each node (1 CPU each); kill the driver once a run is done and another
    # is mid-training.
    driver = subprocess.Popen([sys.executable, "-m", "dagwire.cli", "sweep", *map(str, args)], env=env,
                              start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    done, training = [], []
    try:
        while time.monotonic() < deadline and driver.poll() is None:
            runs = sorted(out.glob("runs/*/seed*"))
            done = [r for r in runs if (r / "status.json").exists()]
            training = [r for r in runs if 1 <= epochs_done(r) <= EPOCHS // 2]
            if done and training:
                break
            time.sleep(0.02)
    finally:
        stop_session(driver.pid)
        driver.wait()
    assert done and training, f"never caught the sweep mid-run: {driver.stderr.read().decode()[-3000:]}"
    assert len(done) < 4
    finished = mtimes(done)
    epochs_at_kill = {r: torch.load(r / "checkpoint.pt", weights_only=True)["epoch"] for r in training}

    result = dagwire_sweep(env, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    df = pd.read_csv(out / "runs.csv")
    assert len(df) == 4 and (df["status"] == "done").all()
    assert mtimes(done) == finished  # finished runs were not redone
    for run, epochs in epochs_at_kill.items():
        assert json.loads((run / "status.json").read_text())["resumed_from_epoch"] == epochs >= 1
    # Every run's results are in DIR, and the runs ran on both nodes, as the table says.
    node_ids = set()
    for _, row in df.iterrows():
        run = out / row["run_dir"]
        for name in RUN_FILES:
            assert (run / name).is_file(), (row["run_dir"], name)
        status = json.loads((run / "status.json").read_text())
        assert status["ray_node_id"] in cluster.ids
        assert row["ray_node"] == status["ray_node"] == f"{status['ray_node_id'][:8]}@{status['ray_node_ip']}"
        metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        assert [m["epoch"] for m in metrics] == list(range(1, EPOCHS + 1))
        node_ids.add(status["ray_node_id"])
    assert node_ids == set(cluster.ids), df[["dataset", "seed", "ray_node"]]


# ---------------------------------------------------------------------------------------------
# A node that does not share DIR


def test_cluster_node_that_cannot_see_dir_fails_its_runs_and_loses_nothing(cluster, data, tmp_path):
    prefix = mount_namespace_prefix(tmp_path)
    if prefix is None:
        pytest.skip("mount namespaces (unshare --mount) are not allowed here")
    shared = tmp_path / "shared"
    shared.mkdir()
    out = shared / "sweep"
    # A third node whose view of `shared` is an empty filesystem of its own: a node without the shared disk.
    hide = ("sh", "-c", 'mount -t tmpfs dagwire-private "$0" && exec "$@"', str(shared))
    blind = cluster.start_node(prefix=(*prefix, *hide))
    home = tmp_path / "home"
    home.mkdir()
    env = clean_env(home, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=cluster.token)
    args = ["--address", cluster.address, "--datasets", data["a"], "--seeds", "0-5", *TINY, "--epochs", "2",
            "--out", out]
    try:
        (blind_id,) = set(cluster.alive_nodes(3)) - set(cluster.ids)
        result = dagwire_sweep(env, *args)
        assert result.returncode == 1, result.stderr[-3000:]
        df = pd.read_csv(out / "runs.csv")
        failed, done = df[df["status"] == "failed"], df[df["status"] == "done"]
        assert len(failed) >= 1 and len(failed) + len(done) == 6, df[["seed", "status", "error"]]
        for _, row in failed.iterrows():
            assert row["ray_node"].startswith(blind_id[:8] + "@"), row["ray_node"]
            assert f"{out} {NOT_SHARED} (Ray node {row['ray_node']}" in row["error"], row["error"]
            run = out / row["run_dir"]
            status = json.loads((run / "status.json").read_text())  # recorded by the driver, in DIR
            assert status["status"] == "failed" and status["ray_node_id"] == blind_id
            assert not (run / "metrics.jsonl").exists()
        for _, row in done.iterrows():
            assert json.loads((out / row["run_dir"] / "status.json").read_text())["ray_node_id"] in cluster.ids
        # The blind node wrote nothing on its own disk either: its view of `shared` is still empty.
        raylets = [pid for pid in session_pids(blind.pid)
                   if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].endswith(b"raylet")]
        assert raylets and list(Path(f"/proc/{raylets[0]}/root{shared}").iterdir()) == []
        finished = mtimes([out / r for r in done["run_dir"]])
    finally:
        cluster.stop_node(blind)
    cluster.alive_nodes(2)

    # Without that node, the rerun retries the failed runs and keeps every finished one.
    result = dagwire_sweep(env, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    df = pd.read_csv(out / "runs.csv")
    assert (df["status"] == "done").all() and df["error"].isna().all()
    assert mtimes([out / r for r in done["run_dir"]]) == finished
    for run in df["run_dir"]:
        assert json.loads((out / run / "status.json").read_text())["ray_node_id"] in cluster.ids
