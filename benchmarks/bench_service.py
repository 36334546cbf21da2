"""Benchmark the segment service (issue 17): start-up, memory, and latency under load on loopback.

Usage (from the repository root)::

    python benchmarks/bench_service.py --scale 10000
    python benchmarks/bench_service.py --scale 100000 --config /tmp/b/config.yml --artifacts /tmp/b/artifacts

Without ``--config``, a copy of the shipped config with ``data.n_customers`` set to ``--scale`` is
written in ``--workdir``; the pipeline is run there when its run is not up to date (``run`` skips
finished stages; not with ``--run-built-by``). Then it creates a key (``add-key``), starts
``python -m core.pipeline serve`` on a free 127.0.0.1 port, and drives it with a bounded number of
requests over ``--clients`` keep-alive HTTP/1.1 connections (a small asyncio client, on uvloop where
installed), each connection sending its next request when the last is answered:

1. ``GET /customers/{id}`` for random customers of the run, ``--clients`` at a time;
2. ``GET /segments``, ``--clients`` at a time;
3. ``GET /customers/{id}``, one at a time (latency without queueing).

Reported: start-up (process start to the first ``/health`` answer, and to scoring ready), resident
memory of the server (Linux: ``/proc``; elsewhere not measured), and per phase p50/p99/max latency,
requests per second, non-200 answers, and the server's CPU milliseconds per request (Linux: from
``/proc``; 1000 divided by it is what one free core could answer per second). The load client runs
on the same machine; on Linux, once the server is loaded, it is pinned to CPU 0 and the client to
CPU 1 (``--no-pin`` to share both), so the client's CPU does not come out of the server's core. ``--record`` appends
the result to benchmarks/RESULTS.md.

A million customers (a run too long to rebuild for each change of the service)::

    python benchmarks/bench_service.py --config /work/m1/config.yml --artifacts /work/m1/artifacts \\
        --run-built-by <commit whose core/service/ built the run> --requests 20000
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import load_average, machine, mib, record  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=10_000, help="customers of the run (default 10,000)")
    parser.add_argument("--workdir", type=Path, help="where the config copy and the run go "
                                                     "(default: a folder in the system's temp folder)")
    parser.add_argument("--config", type=Path, help="use this config instead of a copy of the shipped one")
    parser.add_argument("--artifacts", type=Path, help="artifacts folder of the run (default: <workdir>/artifacts)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients (default 32)")
    parser.add_argument("--requests", type=int, default=4000, help="customer lookups in phase 1 (default 4,000)")
    parser.add_argument("--record", action="store_true", help="append the result to benchmarks/RESULTS.md")
    parser.add_argument("--server-root", type=Path, default=ROOT,
                        help="checkout whose code serves (default: this one); e.g. an export of an older commit, "
                             "to compare two versions of the service with the same client on the same run")
    parser.add_argument("--no-pin", action="store_true",
                        help="do not pin the server to CPU 0 and this load client to CPU 1 once the server is "
                             "loaded (Linux only; default: pin)")
    parser.add_argument("--run-built-by", metavar="COMMIT",
                        help="serve a run built by the code of COMMIT although this checkout's core/service/ differs "
                             "from it: checked first that the run's recorded code hash is that of this checkout with "
                             "core/service/ as at COMMIT (so every stage's code is the code that built the run); the "
                             "service's own status check then compares against that hash, all its other checks as "
                             "they are. For measuring a changed service on a run too long to rebuild")
    return parser.parse_args(argv)


def env(root: Path = ROOT) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(root), "PYTHONUTF8": "1"}


def prepare_run(args) -> tuple[Path, Path, float | None]:
    """The config and artifacts to serve; runs the pipeline when needed (its wall time, or None if up to date)."""
    import yaml

    workdir = args.workdir or Path(os.environ.get("TMPDIR", "/tmp")) / f"bench_service_{args.scale}"
    config = args.config
    if config is None:
        folder = workdir / "config"
        folder.mkdir(parents=True, exist_ok=True)
        doc = yaml.safe_load((ROOT / "config" / "config.yml").read_text(encoding="utf-8"))
        doc["data"]["n_customers"] = args.scale
        for name in ("hierarchy.yml", "personas.yml", "strategies.yml"):
            shutil.copy(ROOT / "config" / name, folder / name)
        config = folder / "config.yml"
        config.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
    artifacts = args.artifacts or workdir / "artifacts"
    if args.run_built_by:  # checked against its recorded code hash in serve_command; never rebuilt here
        return config, artifacts, None
    clock = time.perf_counter()
    # With the code that will serve it: a run is current only for the code that built it.
    done = subprocess.run([sys.executable, "-m", "core.pipeline", "run", "--config", str(config),
                           "--artifacts", str(artifacts)], cwd=args.server_root, env=env(args.server_root),
                          capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"the pipeline run failed:\n{done.stderr[-3000:]}")
    ran = "stage(s) ran" in done.stderr and " 0 stage(s) ran" not in done.stderr
    return config, artifacts, (time.perf_counter() - clock) if ran else None


def new_key(config: Path, artifacts: Path) -> str:
    name = f"bench-{os.getpid()}-{int(time.time())}"
    done = subprocess.run([sys.executable, "-m", "core.pipeline", "add-key", name, "--scopes", "segments,customers",
                           "--config", str(config), "--artifacts", str(artifacts)], cwd=ROOT, env=env(),
                          capture_output=True, text=True, check=True)
    return done.stdout.strip().splitlines()[-1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_mib(pid: int) -> tuple[float | None, float | None]:
    """(current, peak) resident memory of ``pid`` in MiB, from /proc (Linux only)."""
    status = Path(f"/proc/{pid}/status")
    if not status.exists():
        return None, None
    fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds ``pid`` has used, from /proc (Linux only)."""
    stat = Path(f"/proc/{pid}/stat")
    if not stat.exists():
        return None
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def phase(url: str, paths: list[str], clients: int, key: str, pid: int) -> dict:
    """:func:`drive`, plus the server's CPU milliseconds per request (what the load on the machine leaves out)."""
    before = cpu_seconds(pid)
    result = run_loop(drive(url, paths, clients, key))
    after = cpu_seconds(pid)
    result["server_cpu_ms"] = None if before is None else (after - before) * 1000 / result["requests"]
    return result


def run_loop(coroutine):
    """Run ``coroutine`` on uvloop where installed (a cheaper client), else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection to the server: send a GET, read the whole answer, repeat.

    A real HTTP client over a real socket, kept to what the benchmark needs (answers with Content-Length,
    which this server always sends), so that it takes little of the CPU it shares with the server: httpx
    took more CPU per request than the server itself.
    """

    def __init__(self):
        self.buffer = bytearray()
        self.waiter: asyncio.Future | None = None
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        status = answer_status(self.buffer)
        if status is not None and self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(status)

    def connection_lost(self, exc) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"the server closed the connection ({exc})"))

    async def get(self, request: bytes) -> int:
        """Send one request; the status of its answer once the answer is complete."""
        self.buffer.clear()
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self.waiter


def answer_status(buffer: bytearray) -> int | None:
    """The status of the HTTP answer in ``buffer`` once it is complete (headers and Content-Length bytes), else None."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buffer[:end]).lower()
    at = head.find(b"\r\ncontent-length:")
    if at < 0:
        raise ValueError(f"an answer without Content-Length: {bytes(buffer[:200])!r}")
    stop = head.find(b"\r\n", at + 2)
    length = int(head[at + 17: stop if stop >= 0 else len(head)])
    if len(buffer) < end + 4 + length:
        return None
    return int(buffer[9:12])


async def drive(url: str, paths: list[str], clients: int, key: str) -> dict:
    """GET every path over ``clients`` keep-alive connections, one request at a time on each; latencies in ms,
    wall time, non-200 count."""
    host, port = url.split("//", 1)[1].split(":")
    requests = [f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {key}\r\n\r\n".encode()
                for path in paths]
    loop = asyncio.get_running_loop()
    connections = [(await loop.create_connection(Connection, host, int(port)))[1] for _ in range(clients)]
    latencies: list[float] = []
    failures = 0
    queue = iter(requests)
    clock_ns = time.perf_counter_ns

    async def worker(connection: Connection) -> None:
        nonlocal failures
        for request in queue:  # a shared iterator: bounded, each request sent once
            start = clock_ns()
            status = await connection.get(request)
            latencies.append((clock_ns() - start) / 1e6)
            failures += status != 200

    clock = time.perf_counter()
    try:
        await asyncio.gather(*(worker(c) for c in connections))
    finally:
        for connection in connections:
            connection.transport.close()
    wall = time.perf_counter() - clock
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]  # noqa: E731
    return {"requests": len(latencies), "clients": clients, "p50_ms": pick(0.5), "p99_ms": pick(0.99),
            "max_ms": latencies[-1], "rps": len(latencies) / wall, "non_200": failures}


def pin(pid: int, cpus: set[int]) -> bool:
    """Run ``pid`` (0: this process) and each of its threads on ``cpus`` only, where the OS allows it (Linux);
    False elsewhere. Threads made afterwards inherit it from the thread that makes them."""
    if not hasattr(os, "sched_setaffinity"):
        return False
    tasks = Path(f"/proc/{pid or os.getpid()}/task")
    try:
        for tid in ([int(t.name) for t in tasks.iterdir()] if tasks.is_dir() else [pid]):
            os.sched_setaffinity(tid, cpus)
    except OSError:
        return False
    return True


def wait_until(url: str, process: subprocess.Popen, ready, limit: float = 300) -> float:
    import httpx

    clock = time.perf_counter()
    while time.perf_counter() - clock < limit:
        if process.poll() is not None:
            sys.exit("the service stopped during start-up; see its log")
        try:
            answer = httpx.get(f"{url}/health", timeout=2)
            if answer.status_code == 200 and ready(answer.json()):
                return time.perf_counter() - clock
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    sys.exit(f"the service was not ready within {limit} s")


def code_hash_with_service_at(commit: str) -> str:
    """``core.framework.artifacts.code_hash()`` of this checkout with core/service/*.py as at git ``commit``."""
    def git(*words: str) -> bytes:
        return subprocess.run(["git", *words], cwd=ROOT, capture_output=True, check=True).stdout

    service = ROOT / "core" / "service"
    files = {path: path.read_bytes() for path in (ROOT / "core").rglob("*.py") if service not in path.parents}
    for name in git("ls-tree", "-r", "--name-only", commit, "core/service").decode().split():
        if name.endswith(".py"):
            files[ROOT / name] = git("show", f"{commit}:{name}")
    digest = hashlib.sha256()
    for path in sorted(ROOT.glob("0[0-9]_*.py")) + sorted(files):  # the order code_hash() hashes in
        digest.update(path.relative_to(ROOT).as_posix().encode())
        digest.update((files[path] if path in files else path.read_bytes()).replace(b"\r\n", b"\n"))
    return digest.hexdigest()


def serve_command(config: Path, artifacts: Path, port: int, built_by: str | None) -> tuple[list[str], str | None]:
    """The server's command line, and the code hash it is told the run was built with (``--run-built-by``)."""
    serve = ["serve", "--config", str(config), "--artifacts", str(artifacts), "--port", str(port)]
    if built_by is None:
        return [sys.executable, "-m", "core.pipeline", *serve], None
    recorded = json.loads((artifacts / "05_profile_export" / "manifest.json").read_text(encoding="utf-8"))["code_hash"]
    built = code_hash_with_service_at(built_by)
    if built != recorded:
        sys.exit(f"--run-built-by {built_by}: this checkout with core/service/ as at {built_by} hashes to "
                 f"{built[:12]}, the run recorded {recorded[:12]}: its stages' code differs, rebuild the run")
    patched = ("import sys; from core.framework import artifacts; built = sys.argv.pop(1); "
               "artifacts.code_hash = lambda: built; from core import pipeline; "
               "raise SystemExit(pipeline.main(sys.argv[1:]))")
    return [sys.executable, "-c", patched, built, *serve], built


def measure(args) -> dict:
    import pyarrow.parquet as pq

    config, artifacts, pipeline_seconds = prepare_run(args)
    key = new_key(config, artifacts)
    ids = pq.read_table(artifacts / "05_profile_export" / "customers_with_segments.parquet",
                        columns=["customer_id"]).column(0).to_pylist()
    rng = random.Random(0)
    clock = time.perf_counter()
    # The floor under start-up: importing the pipeline's command line (every stage's modules) in a fresh process.
    subprocess.run([sys.executable, "-c", "import core.pipeline"], cwd=args.server_root, env=env(args.server_root),
                   check=True)
    import_floor = time.perf_counter() - clock
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command, built_hash = serve_command(config, artifacts, port, args.run_built_by)
    log = open(artifacts / "bench_service_serve.log", "wb")
    process = subprocess.Popen(command, cwd=args.server_root, env=env(args.server_root), stdout=log,
                               stderr=subprocess.STDOUT)
    try:
        startup = wait_until(url, process, lambda health: True)
        startup_cpu = cpu_seconds(process.pid)  # what start-up costs, whatever else the machine runs
        rss_started, _ = rss_mib(process.pid)
        scoring_ready = startup + wait_until(url, process, lambda health: health["scoring"] != "loading")
        rss_loaded, _ = rss_mib(process.pid)
        # Pinned once loaded (start-up uses both cores): the server and its threads on CPU 0, this client on 1.
        pinned = not args.no_pin and (os.cpu_count() or 1) >= 2 and pin(process.pid, {0}) and pin(0, {1})
        run_loop(drive(url, [f"/customers/{rng.choice(ids)}" for _ in range(500)], args.clients, key))  # warm-up
        lookups = [f"/customers/{rng.choice(ids)}" for _ in range(args.requests)]
        phases = {
            "GET /customers/{id}": phase(url, lookups, args.clients, key, process.pid),
            "GET /segments": phase(url, ["/segments"] * max(args.requests // 4, 100), args.clients, key, process.pid),
            "GET /customers/{id}, 1 client": phase(url, lookups[:1000], 1, key, process.pid),
        }
        rss_now, rss_peak = rss_mib(process.pid)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
    served_log = (artifacts / "bench_service_serve.log").read_text(encoding="utf-8", errors="replace")
    return {"scale": len(ids), "config": str(config), "artifacts": str(artifacts), "pipeline_seconds": pipeline_seconds,
            "startup_seconds": startup, "startup_cpu_seconds": startup_cpu, "import_floor_seconds": import_floor,
            "scoring_ready_seconds": scoring_ready, "rss_started_mib": rss_started, "rss_loaded_mib": rss_loaded,
            "rss_after_mib": rss_now, "rss_peak_mib": rss_peak, "phases": phases, "pinned": pinned,
            "built_by": args.run_built_by, "built_hash": built_hash, "server_root": str(args.server_root),
            "server_says": [line for line in served_log.splitlines() if "serving run" in line][-1:],
            "load_average": load_average()}


def report(result: dict, argv: list[str]) -> str:
    """The result as a RESULTS.md section."""
    where = ("once loaded, server pinned to CPU 0, load client to CPU 1 (`os.sched_setaffinity`)" if result["pinned"]
             else "server and load client not pinned, sharing both cores")
    built = (f"; served with `--run-built-by {result['built_by']}`: the run's recorded code hash "
             f"{result['built_hash'][:12]} is this checkout's with core/service/ as at {result['built_by']}"
             if result["built_by"] else "")
    lines = [f"### Segment service, {result['scale']:,} customers, {dt.date.today().isoformat()}", "",
             f"- Machine: {machine()}",
             f"- Command: `python benchmarks/bench_service.py {' '.join(argv)}`",
             *([f"- Served by the code in {result['server_root']}"] if result["server_root"] != str(ROOT) else []),
             f"- Run: {result['artifacts']} (config {result['config']})"
             + (f"; pipeline run took {result['pipeline_seconds']:.0f} s" if result["pipeline_seconds"] else "")
             + built,
             f"- Start-up (process start to the first /health answer): **{result['startup_seconds']:.1f} s**"
             + (f" ({result['startup_cpu_seconds']:.1f} s of CPU)" if result["startup_cpu_seconds"] else "") + "; "
             f"scoring models ready after {result['scoring_ready_seconds']:.1f} s; a fresh "
             f"`python -c \"import core.pipeline\"` alone took {result['import_floor_seconds']:.1f} s",
             f"- The server's log: {' '.join(result['server_says']) or 'n/a'}",
             f"- Resident memory of the server: {mib(result['rss_started_mib'])} at the first answer, "
             f"{mib(result['rss_loaded_mib'])} with the scoring models loaded, {mib(result['rss_after_mib'])} "
             f"after the load, peak {mib(result['rss_peak_mib'])}",
             f"- Load client: keep-alive HTTP/1.1 over loopback (asyncio protocol{', uvloop' if _has_uvloop() else ''}),"
             f" one request at a time per connection; {where}",
             f"- Load average at the end: {', '.join(f'{v:.1f}' for v in result['load_average'] or [])} "
             f"(2 cores, shared with other jobs)", "",
             "| phase | requests | clients | p50 ms | p99 ms | max ms | requests/s | non-200 | server CPU ms/request |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, p in result["phases"].items():
        cpu = "n/a" if p["server_cpu_ms"] is None else f"{p['server_cpu_ms']:.2f}"
        lines.append(f"| {name} | {p['requests']:,} | {p['clients']} | {p['p50_ms']:.1f} | {p['p99_ms']:.1f} | "
                     f"{p['max_ms']:.1f} | {p['rps']:,.0f} | {p['non_200']} | {cpu} |")
    return "\n".join(lines) + "\n"


def _has_uvloop() -> bool:
    import importlib.util

    return importlib.util.find_spec("uvloop") is not None


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    result = measure(parse_args(argv))
    text = report(result, argv)
    print(text)
    print(json.dumps(result, indent=2, default=str))
    if parse_args(argv).record:
        record(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
