"""
What the benchmarks share: a throwaway embedded PostgreSQL with the schema,
the real daemon on free ports in front of it, and pipelining clients in
their own processes. Everything talks over 127.0.0.1 and unix sockets only.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tradehub.db.embedded import EmbeddedCluster  # noqa: E402
from tradehub.protocol.enums import MessageType, Role  # noqa: E402
from tradehub.protocol.framing import FrameDecoder  # noqa: E402
from tradehub.protocol.messages import HELLO, HELLO_ACK, encode_frame  # noqa: E402

TOKENS = {"FRONTEND": "bench-frontend-token", "ML": "bench-ml-token"}


def compile_cpp(source):
    """Build a bench C++ tool (-O2, threads) into a temporary folder; returns the binary."""
    folder = Path(tempfile.mkdtemp(prefix="tradehub-bench-cpp-"))
    binary = folder / Path(source).stem
    subprocess.run(
        ["g++", "-std=c++17", "-O2", "-pthread", "-I", str(ROOT / "clients" / "cpp"), str(source), "-o", str(binary)],
        check=True,
    )
    return binary


def cpu_seconds(pid):
    """
    User + system CPU seconds a process has used so far (psutil reads them from
    /proc/PID/stat). Over a measured phase, divided by its requests, it is the
    server's CPU per request: steadier than wall-clock figures on a shared machine.
    """
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def cpu_over(server, run):
    """C{run()}'s result, and the CPU seconds C{server} (a Daemon or FloorServer) spent while it ran."""
    before = server.cpu_seconds()
    result = run()
    return result, server.cpu_seconds() - before


class Placement:
    """
    Where a benchmark's processes run, the same for the hub's runs and the
    baselines'. Pinned: the server in the middle (the hub, or the floor
    server) alone on the first CPU, and this process with all it starts
    (PostgreSQL, pgbench, every client) on the others, so a baseline without a
    middle server leaves the first CPU idle. Unpinned: every process on every
    CPU. Use it as a context manager around the whole measurement (the
    database included): it sets this process's affinity, which children
    inherit, and puts it back.
    """

    def __init__(self, pinned=True):
        self.cpus = sorted(os.sched_getaffinity(0))
        self.pinned = pinned and len(self.cpus) > 1
        self.server_cpus = self.cpus[:1] if self.pinned else self.cpus
        self.other_cpus = self.cpus[1:] if self.pinned else self.cpus

    def __enter__(self):
        os.sched_setaffinity(0, self.other_cpus)
        return self

    def __exit__(self, *exc_info):
        os.sched_setaffinity(0, self.cpus)

    def server_command(self, command):
        """C{command} placed as the middle server (taskset execs it: the pid stays the server's)."""
        if not self.pinned:
            return list(command)
        return ["taskset", "-c", ",".join(map(str, self.server_cpus)), *command]

    def __str__(self):
        cpus = ",".join(map(str, self.other_cpus))
        if not self.pinned:
            return f"unpinned: the hub (or floor server), PostgreSQL and every client share CPUs {cpus}"
        return (
            f"pinned: the hub (or floor server) alone on CPU {self.server_cpus[0]} (taskset), PostgreSQL and every "
            f"client on CPU {cpus}, in the hub's runs and the baselines' alike"
        )


def run_placed(parser, argv, measure, report):
    """
    A benchmark's main: its options (with --unpinned and --json), C{measure(options,
    placement)} under the placement, C{report(results)}, the figures written if asked.
    """
    placement_option(parser)
    parser.add_argument("--json", help="also write the figures to this file")
    options = parser.parse_args(argv)
    with Placement(pinned=not options.unpinned) as placement:
        results = measure(options, placement)
    report(results)
    if options.json:
        Path(options.json).write_text(json.dumps(results, indent=2, default=str))
    return results


def placement_option(parser):
    parser.add_argument(
        "--unpinned",
        action="store_true",
        help="run every process on every CPU (default: the hub or floor on one CPU, the rest on the others)",
    )


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Database:
    """A throwaway embedded cluster, migrated by the daemon's own --migrate-only."""

    def __init__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="tradehub-bench-"))
        self.cluster = EmbeddedCluster(self.folder / "pgdata")
        self.cluster.start()
        self.dsn = self.cluster.dsn()
        socket_dir = self.cluster.socket_dir
        self.url = f"postgresql://postgres@/postgres?host={socket_dir}"
        Daemon(self, ["--migrate-only"]).run_to_end()

    def close(self):
        self.cluster.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


class Daemon:
    """
    The real `twistd -n tradehub` against the benchmark database: this
    checkout's code, or C{root}'s (another version of the hub, for a
    comparison in one run). With a C{profile} folder it runs under
    bench/profiled.py, and L{profiling} profiles the load it surrounds.
    """

    def __init__(self, database, args=(), twistd_args=(), placement=None, root=ROOT, profile=None, **settings):
        self.frontend_port = free_port()
        self.ml_port = free_port()
        self.ops_port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TRADEHUB_", "DATABASE_URL"))}
        env.update(
            DATABASE_URL=database.url,
            TRADEHUB_FRONTEND_TOKEN=TOKENS["FRONTEND"],
            TRADEHUB_ML_TOKEN=TOKENS["ML"],
            TRADEHUB_FRONTEND_ENDPOINT=f"tcp:{self.frontend_port}:interface=127.0.0.1",
            TRADEHUB_ML_ENDPOINT=f"tcp:{self.ml_port}:interface=127.0.0.1",
            TRADEHUB_OPS_ENDPOINT=f"tcp:{self.ops_port}:interface=127.0.0.1",
            TRADEHUB_DATA_DIR=str(database.folder / "daemon"),
        )
        env.update({k: str(v) for k, v in settings.items()})
        # This checkout's code (or root's), not whatever the venv's .pth names (another worktree's, say).
        env["PYTHONPATH"] = os.pathsep.join([str(root), *filter(None, [os.environ.get("PYTHONPATH")])])
        self.log = open(database.folder / "daemon.log", "ab")
        # Daemons of one database share its log: this one's lines begin here.
        self.log_start = self.log.tell()
        twistd = [str(Path(sys.executable).parent / "twistd")]
        self.profile = profile
        self._profiles = 0
        if profile is not None:
            env["TRADEHUB_BENCH_PROFILE"] = str(profile)
            twistd = [sys.executable, str(ROOT / "bench" / "profiled.py")]
        command = [*twistd, "-n", "--pidfile=", *twistd_args, "tradehub", *args]
        self.process = subprocess.Popen(
            placement.server_command(command) if placement else command,
            cwd=database.folder,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.log_path = database.folder / "daemon.log"

    def run_to_end(self):
        if self.process.wait(120):
            raise RuntimeError(f"daemon failed: see {self.log_path}")

    def wait_ready(self):
        # The first process's line: with TRADEHUB_WORKERS, a worker's is "[worker N tradehub.service...".
        _wait_for(b"[tradehub.service.HubService#info] ready: ", self.process, self.log_path, self.log_start)
        return self

    def cpu_seconds(self):
        """The hub's CPU seconds: of its first process and (TRADEHUB_WORKERS) of its workers."""
        workers = psutil.Process(self.process.pid).children()
        return cpu_seconds(self.process.pid) + sum(cpu_seconds(worker.pid) for worker in workers)

    def profiling(self, run):
        """C{run()}'s result, and the hub's cProfile stats file over it (a daemon made with a C{profile} folder)."""
        self.process.send_signal(signal.SIGUSR1)
        try:
            result = run()
        finally:
            self.process.send_signal(signal.SIGUSR2)
        self._profiles += 1
        path = Path(self.profile) / f"{self._profiles}.prof"
        deadline = time.monotonic() + 60
        while not path.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the hub wrote no profile: see {self.log_path}")
            time.sleep(0.05)
        return result, path

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)
        self.log.close()


class FloorServer:
    """bench/floor.py in its own process, placed where the hub would be."""

    def __init__(self, database, placement=None):
        self.port = free_port()
        self.log_path = database.folder / "floor.log"
        self.log = open(self.log_path, "ab")
        self.log_start = self.log.tell()
        command = [sys.executable, str(ROOT / "bench" / "floor.py"), "--dsn", database.dsn, "--port", str(self.port)]
        self.process = subprocess.Popen(
            placement.server_command(command) if placement else command,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def wait_ready(self):
        _wait_for(b"floor ready: ", self.process, self.log_path, self.log_start)
        return self

    def cpu_seconds(self):
        return cpu_seconds(self.process.pid)

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)
        self.log.close()


def _wait_for(marker, process, log_path, start):
    """Until C{marker} is in the process's log past C{start}; raises if it dies or takes a minute."""
    deadline = time.monotonic() + 60
    while marker not in log_path.read_bytes()[start:]:
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{' '.join(map(str, process.args))} did not start: {log_path.read_text()[-3000:]}")
        time.sleep(0.05)


def connect(port, role=Role.FRONTEND):
    """A handshaken socket to the hub."""
    return session(port, role)[0]


def session(port, role=Role.FRONTEND):
    """A handshaken socket to the hub, and its HELLO_ACK (decoded: max_frame and the rest)."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    payload = HELLO.encode(
        {"role": role, "min_version": 1, "max_version": 1, "client_name": "bench", "token": TOKENS[Role(role).name]}
    )
    sock.sendall(encode_frame(MessageType.HELLO, payload))
    decoder = FrameDecoder(1 << 30)
    frames = []
    while not frames:
        frames = decoder.feed(sock.recv(65536))
    return sock, HELLO_ACK.decode(frames[0].payload)


def pipeline(port, frames, results, index, start_at):
    """
    Send every frame (pre-encoded) as fast as the hub takes them, while a
    second thread reads the answers; record (first send, last answer, errors).
    """
    import threading

    sock = connect(port)
    stream = b"".join(frames)
    expected = len(frames)
    outcome = {}

    def read():
        decoder = FrameDecoder(1 << 30)
        answered = errors = 0
        while answered < expected:
            for frame in decoder.feed(sock.recv(1 << 20)):
                if frame.header.type == MessageType.RESPONSE and not frame.header.flags & 1:
                    answered += 1
                elif frame.header.type == MessageType.ERROR:
                    answered += 1
                    errors += 1
        outcome["end"] = time.perf_counter()
        outcome["errors"] = errors

    reader = threading.Thread(target=read)
    while time.time() < start_at:
        time.sleep(0.001)
    reader.start()
    begin = time.perf_counter()
    sock.sendall(stream)
    reader.join()
    sock.close()
    results[index] = (begin, outcome["end"], outcome["errors"])


def run_clients(port, frame_sets):
    """Pipeline each frame set from its own process, started together; returns (seconds, errors)."""
    import multiprocessing

    manager = multiprocessing.Manager()
    results = manager.dict()
    start_at = time.time() + 0.5
    processes = [
        multiprocessing.Process(target=pipeline, args=(port, frames, results, i, start_at))
        for i, frames in enumerate(frame_sets)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    spans = list(results.values())
    return max(end for _, end, _ in spans) - min(begin for begin, _, _ in spans), sum(e for _, _, e in spans)


def percentile(values, share):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def latency_figures(latencies_us):
    """p50, p90, p99 and max of latencies in microseconds, and how many."""
    return {
        "p50_us": percentile(latencies_us, 0.50),
        "p90_us": percentile(latencies_us, 0.90),
        "p99_us": percentile(latencies_us, 0.99),
        "max_us": max(latencies_us),
        "n": len(latencies_us),
    }


def table(headings, rows):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headings)]
    lines = ["  ".join(str(h).rjust(w) for h, w in zip(headings, widths, strict=True))]
    lines += ["  ".join(str(c).rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)
