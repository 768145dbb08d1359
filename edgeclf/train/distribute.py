"""Training on several machines (``tf.distribute.MultiWorkerMirroredStrategy``) or several GPUs.

The cluster comes from ``TF_CONFIG``, the TensorFlow convention that Kubernetes' TFJob and
Vertex AI set; ``edgeclf train --workers HOST:PORT,... --worker-index I`` writes it for the user.
Every worker reads the same folder and makes the same seeded split; the training data is
sharded by data (each global batch is split across the workers, so the gradient of a step is
the same as one process's on that batch); worker 0 is the chief and the only one that writes
the run directory.

A worker that dies must not leave the others waiting forever: collectives run with a timeout
and TensorFlow's coordination service notices a peer that stops sending heartbeats, so the
others stop with ``WorkerLostError``; a cluster that never forms (a worker that never starts)
is bounded by a watchdog around the strategy's creation.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Callable, Mapping, Optional

from ..errors import EdgeclfError, OptionError, UsageError

TF_CONFIG = "TF_CONFIG"
DEFAULT_WORKER_TIMEOUT_S = 300.0
_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")


class WorkerLostError(EdgeclfError):
    """A worker of a multi-worker training stopped answering; the others stop too."""


@dataclass(frozen=True)
class Cluster:
    """The workers of a multi-worker training and which one this process is."""

    workers: tuple[str, ...]  # HOST:PORT, chief first
    index: int
    job: str = "worker"  # this task's type in TF_CONFIG ("chief" or "worker")

    @property
    def size(self) -> int:
        return len(self.workers)

    @property
    def is_chief(self) -> bool:
        return self.index == 0

    def describe(self) -> str:
        role = "the chief, writes the run" if self.is_chief else "writes nothing but its log"
        return f"worker {self.index} of {self.size} ({self.workers[self.index]}; {role})"


def _check_address(addr: str, where: str) -> str:
    m = _HOST_PORT.match(addr.strip())
    if not m or not 0 < int(m.group(2)) < 65536:
        raise UsageError(f"{where}: {addr!r} is not HOST:PORT (e.g. 10.0.0.2:12345)")
    return addr.strip()


def parse_workers(workers: str, index: int) -> Cluster:
    """``--workers a:1,b:2 --worker-index I`` as a Cluster (worker 0 is the chief)."""
    addrs = tuple(_check_address(a, "workers") for a in str(workers).split(",") if a.strip())
    if len(addrs) < 2:
        raise OptionError("workers", f"needs at least two HOST:PORT addresses, comma-separated; got {workers!r}")
    if len(set(addrs)) != len(addrs):
        raise OptionError("workers", f"names an address twice: {workers!r}")
    if index is None:
        raise OptionError("worker_index", f"is needed with workers: this machine's place in the list, 0 on "
                                          f"{addrs[0]} (the chief) ... {len(addrs) - 1} on {addrs[-1]}")
    if not 0 <= index < len(addrs):
        raise OptionError("worker_index", f"must be 0..{len(addrs) - 1} for {len(addrs)} workers; got {index}")
    return Cluster(addrs, int(index))


def tf_config(cluster: Cluster) -> str:
    """The ``TF_CONFIG`` value that describes ``cluster`` (all workers; worker 0 leads)."""
    return json.dumps({"cluster": {"worker": list(cluster.workers)},
                       "task": {"type": "worker", "index": cluster.index}})


def _job_list(jobs: dict, name: str) -> list[str]:
    tasks = jobs.get(name, [])
    if not isinstance(tasks, list) or not all(isinstance(a, str) for a in tasks):
        # a bare "host:port" would otherwise be read one character at a time
        example = json.dumps([tasks] if isinstance(tasks, str) else ["host:port", "host:port"])
        raise UsageError(f'{TF_CONFIG}: cluster "{name}" must be a list of "HOST:PORT" strings, not '
                         f"{json.dumps(tasks)[:80]}; write {example}")
    return tasks


def cluster_from_env(environ: Mapping[str, str] = os.environ) -> Optional[Cluster]:
    """The cluster ``TF_CONFIG`` names, or None for one process (absent, or one task in all)."""
    raw = environ.get(TF_CONFIG)
    if not raw:
        return None
    try:
        d = json.loads(raw)
        jobs = d["cluster"]
        task = d["task"]
        chief, workers = (_job_list(jobs, name) for name in ("chief", "worker"))
        kind, index = str(task["type"]), int(task["index"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(f"{TF_CONFIG} is not valid ({type(exc).__name__}: {exc}); it must be JSON like "
                         '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": 0}}') from None
    unknown = set(jobs) - {"chief", "worker"}
    if unknown:
        raise UsageError(f"{TF_CONFIG} names jobs {sorted(unknown)}; edgeclf trains with chief/worker jobs only "
                         "(MultiWorkerMirroredStrategy has no parameter servers or evaluators)")
    everyone = tuple(_check_address(a, TF_CONFIG) for a in chief + workers)
    if kind not in ("chief", "worker") or not 0 <= index < len(chief if kind == "chief" else workers):
        raise UsageError(f"{TF_CONFIG}: task {kind!r} {index} is not in the cluster")
    if len(everyone) < 2:
        return None
    position = index if kind == "chief" else len(chief) + index
    return Cluster(everyone, position, kind)


_WATCHDOG = """\
import os, select, signal, sys, time
pid, seconds, message, stopped_msg = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4]
names = {signal.SIGINT: "Interrupted", signal.SIGTERM: "Terminated"}
watched = [int(n) for n in sys.argv[5].split(",") if n]


def say(line):
    sys.stderr.write(line + "\\n")
    sys.stderr.flush()


def stopped(signum, frame):
    # The waiting process got the same signal from its group. SIGINT takes its default action
    # there (it ends at once); SIGTERM is taken by TensorFlow's preemption notifier, so a process
    # still there after a moment is ended here.
    say(names[signum] + stopped_msg)
    for _ in range(50):
        if os.getppid() != pid:
            break
        time.sleep(0.01)
    else:
        os.kill(pid, signal.SIGKILL)
    os._exit(0)


for s in names:
    signal.signal(s, stopped if s in watched else signal.SIG_IGN)
sys.stdout.write("ready\\n")
sys.stdout.flush()
ready, _, _ = select.select([sys.stdin], [], [], seconds)
if not ready:  # nobody cancelled in time: say why, then end the stuck process
    say(message)
    os.kill(pid, signal.SIGKILL)
elif os.read(sys.stdin.fileno(), 1) != b"c":  # the process ended while it waited (a signal to it alone)
    say("Stopped" + stopped_msg)
"""

_STOPPED = " while waiting for the other workers of the cluster; nothing was written."


class _Watchdog:
    """Ends this process with ``message`` unless cancelled within ``seconds``, and makes Ctrl-C
    and SIGTERM work while it waits.

    TensorFlow's cluster start-up blocks in C++ while it waits for every worker, holding the GIL,
    so no Python thread or signal handler can run: a small separate process keeps the time.
    For the same reason a Python handler for SIGINT/SIGTERM would only set a flag nobody reads,
    so while the watchdog runs those signals take their default action (Ctrl-C ends this process
    at once: the shell's 130) and the watchdog, in the same process group, catches the group's
    signal, prints the one line that says what happened and ends this process if it is still
    there half a second later (TensorFlow's preemption notifier takes SIGTERM once the wait has
    begun). Closing its stdin cancels it (also when this process dies)."""

    def __init__(self, seconds: float, message: str):
        import signal
        import subprocess
        import sys
        import threading

        self._saved: dict = {}
        watched = []
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(sig) not in (signal.SIG_IGN, None):  # an ignored signal stays ignored
                    watched.append(int(sig))
        self._proc = subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(seconds),
                                       f"Error: {message}", _STOPPED, ",".join(map(str, watched))],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        # Its handlers must be in place before a signal may end this process silently.
        self._proc.stdout.readline()
        for sig in watched:
            self._saved[sig] = signal.signal(sig, signal.SIG_DFL)

    def cancel(self) -> None:
        import signal

        try:
            self._proc.stdin.write(b"c")
            self._proc.stdin.close()
        except OSError:  # it has ended already (a signal, or the timeout)
            pass
        self._proc.wait()
        self._proc.stdout.close()
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)


def make_strategy(tf, cluster: Optional[Cluster], *, timeout: float = DEFAULT_WORKER_TIMEOUT_S,
                  say: Callable[[str], None] = lambda msg: None):
    """The strategy for this process: multi-worker for a cluster, mirrored for several GPUs,
    else TensorFlow's default (one device). ``say`` tells that the wait for the cluster began."""
    if cluster is None:
        gpus = tf.config.list_physical_devices("GPU")
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if not os.environ.get(TF_CONFIG):  # given as --workers: TensorFlow reads the cluster from here
        os.environ[TF_CONFIG] = tf_config(cluster)
    timer = _Watchdog(timeout, f"the cluster did not form within {timeout:g} s: not every worker of "
                               f"{', '.join(cluster.workers)} started (or a firewall blocks the ports); "
                               "start every worker with the same --workers list")
    say(f"multi-worker training: {cluster.describe()}; waiting for all {cluster.size} workers")
    try:
        options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout)
        from .._quiet import native_stderr_silenced

        with native_stderr_silenced():
            return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    finally:
        timer.cancel()


def lost_worker(exc: BaseException, cluster: Optional[Cluster]) -> Optional[WorkerLostError]:
    """A WorkerLostError for an error that means a peer died, else None."""
    if cluster is None:
        return None
    name = type(exc).__name__
    text = str(exc)
    if name in ("UnavailableError", "DeadlineExceededError", "CancelledError", "AbortedError") or \
            "Collective ops is aborted" in text or "unhealthy" in text:
        peers = re.findall(r"/job:(?:worker|chief)/replica:0/task:(\d+)", text)
        others = sorted({int(p) for p in peers} - {cluster.index})
        who = f"worker {others[0]} ({cluster.workers[others[0]]})" if others and others[0] < cluster.size \
            else "another worker"
        return WorkerLostError(f"{who} stopped answering, so worker {cluster.index} stopped too; nothing was "
                               "written. Start every worker again with the same --workers list")
    return None
