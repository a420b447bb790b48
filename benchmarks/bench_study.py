"""Vote throughput of the study server: 20 raters voting at once over loopback, each vote one Parquet part.

Builds a throw-away sweep (samples table + tiny clips) and a study (3 variants → 3 pairs × 8 units = 24 items,
3 questions, 3 repeats per rater: 81 votes per rater), starts `python -m sweep.study serve` in its own process
on 127.0.0.1 (a free port), and has N concurrent raters (asyncio + aiohttp client) each fetch its session and
post its votes one after another, as fast as the server answers. Bounded (raters × votes each), stops by
itself, and checks afterwards that the votes table holds exactly the accepted votes.

    python benchmarks/bench_study.py                 # 20 raters, every vote of their schedule
    python benchmarks/bench_study.py --raters 20 --votes 40 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sweep import study as S
from sweep.results.tables import write_part
from videoio import moving_shape_video, write_video

VARIANTS = ("qk=off v=off", "qk=1d v=2d debias=difference", "qk=1d v=off")


def build(folder: Path, n_videos: int = 4, n_prompts: int = 2) -> str:
    clip = write_video(folder / "clip.mp4", moving_shape_video(8, 32, 32))  # one file serves every row
    rows = [{"variant": v, "video": f"video{i}", "prompt": f"prompt {j}", "generation_seed": 0,
             "checkpoint_step_applied": 0 if v == VARIANTS[0] else 200, "status": "ok", "video_path": str(clip),
             "source_video": str(clip), "sample_key": f"{v}-{i}-{j}"}
            for v in VARIANTS for i in range(n_videos) for j in range(n_prompts)]
    write_part(str(folder / "storage"), "bench", "t1", rows)
    return str(folder / "storage" / "bench")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def rater(session, url: str, token: str, limit: int | None, latencies: list, statuses: dict) -> None:
    async with session.get(f"{url}/api/{token}/session") as resp:
        data = await resp.json()
    todo = [(p, q["id"]) for p in data["presentations"] for q in data["questions"]]
    for k, (p, q) in enumerate(todo[:limit]):
        body = {"item": p["item"], "repeat": p["repeat"], "question": q, "choice": "left" if k % 3 else "right",
                "response_ms": 1000}
        t0 = time.perf_counter()
        async with session.post(f"{url}/api/{token}/vote", json=body) as resp:
            await resp.read()
            statuses[resp.status] = statuses.get(resp.status, 0) + 1
        latencies.append(time.perf_counter() - t0)


async def run_clients(url: str, tokens: list[str], limit: int | None) -> tuple[float, list, dict]:
    import aiohttp

    latencies: list[float] = []
    statuses: dict[int, int] = {}
    conn = aiohttp.TCPConnector(limit=len(tokens))
    async with aiohttp.ClientSession(connector=conn) as session:
        t0 = time.perf_counter()
        await asyncio.gather(*(rater(session, url, t, limit, latencies, statuses) for t in tokens))
        wall = time.perf_counter() - t0
    return wall, latencies, statuses


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--raters", type=int, default=20, help="concurrent raters (default 20)")
    ap.add_argument("--votes", type=int, help="votes per rater (default: the whole schedule, 81)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-study-") as tmp:
        sweep = build(Path(tmp))
        S.create_study(sweep, "bench", VARIANTS, raters=args.raters, repeats=3)
        tokens = [r["token"] for r in S.load_raters(sweep, "bench")]
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen([sys.executable, "-m", "sweep.study", "serve", "bench", "--sweep", sweep,
                                   "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.time() + 60
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if server.poll() is not None or time.time() > deadline:
                        raise SystemExit("the study server did not start") from None
                    time.sleep(0.1)
            wall, lat, statuses = asyncio.run(run_clients(url, tokens, args.votes))
        finally:
            server.terminate()
            server.wait(timeout=30)
        stored = S.load_votes(sweep, "bench").num_rows
    lat_ms = sorted(x * 1000 for x in lat)
    result = {
        "raters": args.raters, "votes": len(lat), "accepted": statuses.get(201, 0), "statuses": statuses,
        "stored": stored, "wall_s": round(wall, 2), "votes_per_s": round(len(lat) / wall, 1),
        "latency_ms_p50": round(statistics.median(lat_ms), 1),
        "latency_ms_p95": round(lat_ms[int(0.95 * (len(lat_ms) - 1))], 1),
        "latency_ms_max": round(lat_ms[-1], 1), "cpus": os.cpu_count(), "load_avg_1min": os.getloadavg()[0],
    }
    assert stored == result["accepted"] == result["votes"], result
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['votes']} votes from {args.raters} concurrent raters in {result['wall_s']} s: "
              f"{result['votes_per_s']} votes/s; latency p50 {result['latency_ms_p50']} ms, "
              f"p95 {result['latency_ms_p95']} ms, max {result['latency_ms_max']} ms; all {stored} stored "
              f"({result['cpus']} CPUs, load average {result['load_avg_1min']:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
