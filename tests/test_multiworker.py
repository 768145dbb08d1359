"""Multi-worker training: two worker processes on 127.0.0.1 train like one process with the same
global batch, only the chief writes, and a worker that dies stops the other with a message.
Everything waits on events (a line printed, a process ending), never on the clock."""

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from edgeclf.errors import OptionError, UsageError
from edgeclf.train.distribute import Cluster, cluster_from_env, lost_worker, parse_workers, tf_config

ROOT = Path(__file__).resolve().parents[1]


def test_workers_option_and_tf_config_agree():
    c = parse_workers("10.0.0.1:2222, 10.0.0.2:2222", 1)
    assert c == Cluster(("10.0.0.1:2222", "10.0.0.2:2222"), 1) and not c.is_chief
    assert cluster_from_env({"TF_CONFIG": tf_config(c)}) == c
    with_chief = {"cluster": {"chief": ["a:1"], "worker": ["b:2", "c:3"]}, "task": {"type": "worker", "index": 1}}
    assert cluster_from_env({"TF_CONFIG": json.dumps(with_chief)}).workers[2] == "c:3"
    assert cluster_from_env({}) is None
    assert cluster_from_env({"TF_CONFIG": json.dumps({"cluster": {"worker": ["a:1"]},
                                                      "task": {"type": "worker", "index": 0}})}) is None


@pytest.mark.parametrize("workers, index, message", [
    ("a:1", 0, "at least two"), ("a:1,a:1", 0, "twice"), ("a:1,b:2", 2, "0..1"), ("a:1,b", 0, "not HOST:PORT"),
    ("a:1,b:70000", 0, "not HOST:PORT"),
])
def test_bad_worker_lists_are_refused(workers, index, message):
    with pytest.raises(UsageError, match=message):
        parse_workers(workers, index)


def test_bad_tf_config_is_one_clear_error():
    for bad in ("{not json", json.dumps({"cluster": {"ps": ["a:1"], "worker": ["b:2"]},
                                         "task": {"type": "worker", "index": 0}})):
        with pytest.raises(UsageError, match="TF_CONFIG"):
            cluster_from_env({"TF_CONFIG": bad})


def test_a_worker_list_without_an_index_says_what_to_pass(tmp_path):
    from click.testing import CliRunner

    from edgeclf.cli import main

    with pytest.raises(OptionError) as err:
        parse_workers("a:1,b:2", None)
    assert str(err.value).startswith("worker_index is needed with workers") and "0 on a:1 (the chief)" in str(err.value)
    res = CliRunner().invoke(main, ["train", str(tmp_path), "--out", str(tmp_path / "r"), "--workers", "a:1,b:2"])
    assert res.exit_code == 2 and "--worker-index is needed with workers" in res.output, res.output
    assert "None" not in res.output


@pytest.mark.parametrize("worker", ["localhost:12345", [1, 2], {"a": "b:1"}])
def test_a_tf_config_job_that_is_not_a_list_is_one_clear_error(worker):
    config = json.dumps({"cluster": {"worker": worker}, "task": {"type": "worker", "index": 0}})
    with pytest.raises(UsageError, match='cluster "worker" must be a list of "HOST:PORT" strings') as err:
        cluster_from_env({"TF_CONFIG": config})
    if worker == "localhost:12345":
        assert 'write ["localhost:12345"]' in str(err.value)


def test_a_dead_peer_names_the_worker():
    c = Cluster(("h:1", "h:2"), 0)

    class UnavailableError(Exception):
        pass

    err = lost_worker(UnavailableError("Collective ops is aborted by: ... /job:worker/replica:0/task:1 ..."), c)
    assert "worker 1 (h:2) stopped answering" in str(err)
    assert lost_worker(ValueError("shapes differ"), c) is None
    assert lost_worker(UnavailableError("x"), None) is None


def test_worker_index_without_workers_is_refused(tmp_path):
    from edgeclf.train import train_model

    with pytest.raises(OptionError, match="worker_index needs workers"):
        train_model(tmp_path, out=tmp_path / "run", worker_index=1)


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class Worker:
    """One `edgeclf train` worker process; its stderr lines arrive on a queue."""

    def __init__(self, args, index, workers, timeout=60, own_group=False):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        env.pop("TF_CONFIG", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgeclf", "train", *map(str, args), "--workers", workers,
             "--worker-index", str(index), "--worker-timeout", str(timeout)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
            start_new_session=own_group)  # its own process group, to be signalled as a terminal does
        self.lines: "queue.Queue[str | None]" = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stderr:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, text, timeout=240):
        """Block until a stderr line holds ``text``; False when the process ended first."""
        while True:
            line = self.lines.get(timeout=timeout)
            if line is None:
                return False
            self.seen.append(line)
            if text in line:
                return True

    def finish(self, timeout=240):
        rc = self.proc.wait(timeout=timeout)
        while True:  # the reader thread has the rest of stderr
            line = self.lines.get(timeout=30)
            if line is None:
                break
            self.seen.append(line)
        return rc, "".join(self.seen)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from edgeclf.data.synth import generate

    root = tmp_path_factory.mktemp("mw") / "shapes"
    generate(root, classes=3, per_class=16, size=24, seed=5)
    return root


ARGS = ["--model", "tutorial_cnn", "--epochs", "2", "--batch-size", "8", "--image-size", "24"]


@pytest.mark.slow
def test_two_workers_train_like_one_process_and_only_the_chief_writes(shapes, tmp_path):
    from edgeclf.runtime.layout import RunDir
    from edgeclf.train import train_model

    single = train_model(shapes, out=tmp_path / "single", model="tutorial_cnn", epochs=2, batch_size=8,
                         image_size=24, verbose=False)
    ports = _free_ports(2)
    workers = ",".join(f"127.0.0.1:{p}" for p in ports)
    procs = [Worker([shapes, *ARGS, "--out", tmp_path / f"w{i}"], i, workers) for i in range(2)]
    results = [w.finish() for w in procs]
    for i, (rc, err) in enumerate(results):
        assert rc == 0, f"worker {i}:\n{err[-3000:]}"
    assert "batch size 8 is global" in results[0][1]
    assert not (tmp_path / "w1").exists(), "a worker that is not the chief writes nothing"
    chief = RunDir(tmp_path / "w0")
    assert chief.spec() == RunDir(single.out).spec()
    n = len(chief.spec().labels)
    assert chief.split(n) == RunDir(single.out).split(n), "every worker and the single run split alike"
    multi = json.loads(chief.file(RunDir.METRICS).read_text())["val_accuracy"]
    # The same global batches and initial weights: only the order of float sums differs.
    assert abs(multi - single.val_accuracy) <= 0.1, (multi, single.val_accuracy)


@pytest.mark.slow
def test_a_worker_that_dies_stops_the_other_with_a_message(shapes, tmp_path):
    ports = _free_ports(2)
    workers = ",".join(f"127.0.0.1:{p}" for p in ports)
    long = ["--model", "tutorial_cnn", "--epochs", "500", "--batch-size", "8", "--image-size", "24"]
    chief, other = (Worker([shapes, *long, "--out", tmp_path / f"w{i}"], i, workers) for i in range(2))
    try:
        assert other.wait_for("epoch 1/500"), "worker 1 never finished an epoch:\n" + "".join(other.seen)
        other.proc.kill()
        rc, err = chief.finish(timeout=180)
    finally:
        for w in (chief, other):
            if w.proc.poll() is None:
                w.proc.kill()
    assert rc == 1, err[-3000:]
    assert "worker 1 (127.0.0.1:" in err and "stopped answering" in err, err[-3000:]
    assert "Traceback" not in err
    assert not (tmp_path / "w0").exists(), "nothing is written when training did not finish"


@pytest.mark.slow
def test_a_worker_that_never_starts_is_not_waited_for_forever(shapes, tmp_path):
    ports = _free_ports(2)
    workers = ",".join(f"127.0.0.1:{p}" for p in ports)
    alone = Worker([shapes, *ARGS, "--out", tmp_path / "w0"], 0, workers, timeout=5)  # worker 1 never starts
    rc, err = alone.finish(timeout=240)
    assert rc != 0, err[-3000:]
    assert "the cluster did not form within" in err and "start every worker" in err, err[-3000:]


def _until_tensorflow_takes_sigterm(pid, limit_s=120):
    """Wait until TensorFlow's preemption notifier catches SIGTERM in ``pid`` (edgeclf leaves it
    at the default action for the wait): the sign that the C++ wait for the cluster has begun.
    Nothing is printed then, so the process's signal mask is polled (Linux)."""
    import threading
    import time

    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/status") as f:
            caught = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
        if caught & (1 << (signal.SIGTERM - 1)):
            return
        threading.Event().wait(0.05)
    raise AssertionError(f"the worker never entered TensorFlow's wait within {limit_s} s")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_and_sigterm_stop_a_worker_waiting_for_its_cluster(shapes, tmp_path, sig):
    """TensorFlow holds the GIL while a worker waits for its peers, so no Python handler runs;
    Ctrl-C (SIGINT to the terminal's process group) or a group SIGTERM must still end it at once,
    with one line that says what happened."""
    ports = _free_ports(2)
    workers = ",".join(f"127.0.0.1:{p}" for p in ports)
    waiting = Worker([shapes, *ARGS, "--out", tmp_path / "w1"], 1, workers, timeout=600, own_group=True)
    try:
        assert waiting.wait_for("waiting for all 2 workers"), "".join(waiting.seen)
        _until_tensorflow_takes_sigterm(waiting.proc.pid)  # now inside TensorFlow's wait, GIL held
        os.killpg(waiting.proc.pid, sig)
        rc = waiting.proc.wait(timeout=5)  # the bound is the requirement; the peer never starts
    finally:
        if waiting.proc.poll() is None:
            os.killpg(waiting.proc.pid, signal.SIGKILL)
    _, err = waiting.finish(timeout=30)
    # Ended by the signal, as a shell reports it: 130 for Ctrl-C; SIGTERM is taken by TensorFlow's
    # preemption notifier once the wait has begun, so the watchdog ends the process (137).
    assert rc == (-signal.SIGINT if sig == signal.SIGINT else -signal.SIGKILL), rc
    after = err.split("waiting for all 2 workers", 1)[1].splitlines()[1:]
    word = "Interrupted" if sig == signal.SIGINT else "Terminated"
    assert len(after) == 1 and after[0].startswith(word) and "nothing was written" in after[0], err[-2000:]
    assert not (tmp_path / "w1").exists()
