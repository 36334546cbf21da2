"""Benchmark the segment service (issue 17): start-up, memory, and latency under load on loopback.

Usage (from the repository root)::

    python benchmarks/bench_service.py --scale 10000
    python benchmarks/bench_service.py --scale 100000 --config /tmp/b/config.yml --artifacts /tmp/b/artifacts

Without ``--config``, a copy of the shipped config with ``data.n_customers`` set to ``--scale`` is
written in ``--workdir``; the pipeline is run there when its run is not up to date (``run`` skips
finished stages). Then it creates a key (``add-key``), starts ``python -m core.pipeline serve`` on a
free 127.0.0.1 port, and drives it with an asyncio httpx loop of a bounded number of requests:

1. ``GET /customers/{id}`` for random customers of the run, ``--clients`` at a time;
2. ``GET /segments``, ``--clients`` at a time;
3. ``GET /customers/{id}``, one at a time (latency without queueing).

Reported: start-up (process start to the first ``/health`` answer, and to scoring ready), resident
memory of the server (Linux: ``/proc``; elsewhere not measured), and per phase p50/p99/max latency,
requests per second, non-200 answers, and the server's CPU milliseconds per request (Linux: from
``/proc``; 1000 divided by it is what one free core could answer per second). The load client runs on the same machine as the server
and takes CPU from it: on 2 cores the figures are a floor, not the server's ceiling. ``--record``
appends the result to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
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
    return parser.parse_args(argv)


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUTF8": "1"}


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
    clock = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "core.pipeline", "run", "--config", str(config),
                           "--artifacts", str(artifacts)], cwd=ROOT, env=env(), capture_output=True, text=True)
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
    result = asyncio.run(drive(url, paths, clients, key))
    after = cpu_seconds(pid)
    result["server_cpu_ms"] = None if before is None else (after - before) * 1000 / result["requests"]
    return result


async def drive(url: str, paths: list[str], clients: int, key: str) -> dict:
    """GET every path, ``clients`` at a time; latencies in ms, wall time, non-200 count."""
    import httpx

    latencies: list[float] = []
    failures = 0
    queue = iter(paths)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, limits=limits,
                                 timeout=60) as client:
        async def worker() -> None:
            nonlocal failures
            for path in queue:  # a shared iterator: bounded, each path asked once
                start = time.perf_counter()
                answer = await client.get(path)
                latencies.append((time.perf_counter() - start) * 1000)
                failures += answer.status_code != 200

        clock = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - clock
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]  # noqa: E731
    return {"requests": len(latencies), "clients": clients, "p50_ms": pick(0.5), "p99_ms": pick(0.99),
            "max_ms": latencies[-1], "rps": len(latencies) / wall, "non_200": failures}


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


def measure(args) -> dict:
    import pyarrow.parquet as pq

    config, artifacts, pipeline_seconds = prepare_run(args)
    key = new_key(config, artifacts)
    ids = pq.read_table(artifacts / "05_profile_export" / "customers_with_segments.parquet",
                        columns=["customer_id"]).column(0).to_pylist()
    rng = random.Random(0)
    clock = time.perf_counter()
    # The floor under start-up: importing the pipeline's command line (every stage's modules) in a fresh process.
    subprocess.run([sys.executable, "-c", "import core.pipeline"], cwd=ROOT, env=env(), check=True)
    import_floor = time.perf_counter() - clock
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(artifacts / "bench_service_serve.log", "wb")
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "core.pipeline", "serve", "--config", str(config),
                                "--artifacts", str(artifacts), "--port", str(port)], cwd=ROOT, env=env(),
                               stdout=log, stderr=subprocess.STDOUT)
    try:
        startup = wait_until(url, process, lambda health: True)
        scoring_ready = startup + wait_until(url, process, lambda health: health["scoring"] != "loading")
        rss_loaded, _ = rss_mib(process.pid)
        asyncio.run(drive(url, [f"/customers/{rng.choice(ids)}" for _ in range(200)], args.clients, key))  # warm-up
        lookups = [f"/customers/{rng.choice(ids)}" for _ in range(args.requests)]
        phases = {
            "GET /customers/{id}": phase(url, lookups, args.clients, key, process.pid),
            "GET /segments": phase(url, ["/segments"] * max(args.requests // 4, 100), args.clients, key, process.pid),
            "GET /customers/{id}, 1 client": phase(url, lookups[:500], 1, key, process.pid),
        }
        rss_now, rss_peak = rss_mib(process.pid)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
    return {"scale": len(ids), "config": str(config), "artifacts": str(artifacts), "pipeline_seconds": pipeline_seconds,
            "startup_seconds": startup, "import_floor_seconds": import_floor,
            "scoring_ready_seconds": scoring_ready, "rss_loaded_mib": rss_loaded,
            "rss_after_mib": rss_now, "rss_peak_mib": rss_peak, "phases": phases,
            "load_average": load_average()}


def report(result: dict, argv: list[str]) -> str:
    lines = [f"### Segment service, {result['scale']:,} customers, {dt.date.today().isoformat()}", "",
             f"- Machine: {machine()}",
             f"- Command: `python benchmarks/bench_service.py {' '.join(argv)}`",
             f"- Run: {result['artifacts']} (config {result['config']})"
             + (f"; pipeline run took {result['pipeline_seconds']:.0f} s" if result["pipeline_seconds"] else ""),
             f"- Start-up (process start to the first /health answer): **{result['startup_seconds']:.1f} s**; "
             f"scoring models ready after {result['scoring_ready_seconds']:.1f} s; a fresh `python -c \"import core.pipeline\"` "
             f"alone took {result['import_floor_seconds']:.1f} s of that",
             f"- Resident memory of the server: {mib(result['rss_loaded_mib'])} loaded, "
             f"{mib(result['rss_after_mib'])} after the load, peak {mib(result['rss_peak_mib'])}",
             f"- Load average at the end: {', '.join(f'{v:.1f}' for v in result['load_average'] or [])} "
             f"(2 cores, shared with other jobs; the load client runs on the same cores)", "",
             "| phase | requests | clients | p50 ms | p99 ms | max ms | requests/s | non-200 | server CPU ms/request |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, p in result["phases"].items():
        cpu = "n/a" if p["server_cpu_ms"] is None else f"{p['server_cpu_ms']:.2f}"
        lines.append(f"| {name} | {p['requests']:,} | {p['clients']} | {p['p50_ms']:.1f} | {p['p99_ms']:.1f} | "
                     f"{p['max_ms']:.1f} | {p['rps']:,.0f} | {p['non_200']} | {cpu} |")
    return "\n".join(lines) + "\n"


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
