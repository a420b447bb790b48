"""How fast the result tables load from thousands of part files, before and after `motion-sweep compact`.

Setting: a sweep's `samples` table written as a grid with a learning-rate axis or a search writes it: one part
per trial, 2–3 rows each (2.5 on average), every column of a real row (the paper plan's generations, metrics,
timings, provenance, 4×16 FID features). Timed, in one run, the median of `--repeats`:

1. `sweep.results.tables.load` (one pyarrow.dataset scan: the compacted files plus the parts they do not hold, schemas
   unified over every file, rewritten parts replacing rows) against plain `pyarrow.dataset` over the same files
   (first file's schema only, no unification, no checks): the goal is ≤ 1.5×;
2. `compact` itself, then `load` of the compacted table (goal: 10,000 rows in under 1 s);
3. the same against S3 (moto's server on 127.0.0.1, as tests/test_s3.py uses), with `--s3-parts` parts.

    python benchmarks/bench_tables.py [--parts 2000 10000] [--s3-parts 500] [--repeats 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds

from sweep.demo import paper_scale_spec
from sweep.results.store import Store
from sweep.results.tables import compact, load, sample_row, write_part
from sweep.run.plan import make_plan
from vocabulary import SEED_GRID


def write_parts(storage: str, sweep: str, n_parts: int, seed: int = 0) -> int:
    """`n_parts` samples parts of 2-3 realistic rows; returns the rows written."""
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        spec = paper_scale_spec(Path(tmp), SEED_GRID)
        gens = [g for t in make_plan(spec).trials for g in t.generations]
    store, rows_written, i = Store(storage), 0, 0
    for part in range(n_parts):
        rows = []
        for _ in range(2 + (part % 2)):  # 2, 3, 2, 3, ...: 2.5 rows per part
            g = gens[i % len(gens)]
            i += 1
            metrics = {m: float(v) for m, v in zip(
                ("text_similarity", "motion_fidelity", "temporal_consistency", "appearance_leakage",
                 "motion_fidelity_dmt", "motion_fidelity_two_way"), rng.normal(0.5, 0.1, 6))}
            metrics["fid_features"] = rng.normal(0, 1, (4, 16)).astype(np.float32)
            row = sample_row(g.columns, metrics, video_path=f"{storage}/store/videos/{uuid.uuid4().hex}.mp4",
                             device="cuda:NVIDIA H100", invert_seconds=95.0, generate_seconds=4.2,
                             score_seconds=1.5, pretrained_metrics=True, clip_pretrained=True,
                             clip_backbone="ViT-B-32/laion2b_s34b_b79k", tracker="cotracker3", fid_backbone="inception")
            row["sample_key"] = f"{row['sample_key']}-{i}"  # distinct rows beyond the plan's own
            rows.append(row)
        write_part(store, sweep, f"trial{part:06d}", rows)
        rows_written += len(rows)
    return rows_written


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def measure(storage: str, sweep: str, n_parts: int, repeats: int) -> dict:
    t0 = time.perf_counter()
    rows = write_parts(storage, sweep, n_parts)
    write_s = time.perf_counter() - t0
    store = Store(f"{storage.rstrip('/')}/{sweep}")
    fs = None if store.is_local else store.fs
    paths = [(str(store.local_path(f"samples/{n}")) if store.is_local else store.abspath(f"samples/{n}"))
             for n in store.list_names("samples", "part-", ".parquet")]
    t_load, table = timed(lambda: load(store.uri), repeats)
    assert table.num_rows == rows, (table.num_rows, rows)
    t_plain, plain = timed(lambda: ds.dataset(paths, format="parquet", filesystem=fs).to_table(), repeats)
    assert plain.num_rows == rows
    t0 = time.perf_counter()
    compact(store.uri, ("samples",), min_age_s=0)
    t_compact = time.perf_counter() - t0
    t_after, after = timed(lambda: load(store.uri), repeats)
    assert after.num_rows == rows
    return {"storage": "s3 (moto, loopback)" if not store.is_local else "local disk", "parts": n_parts,
            "rows": rows, "columns": table.num_columns, "write_s": write_s, "load_s": t_load,
            "plain_pyarrow_dataset_s": t_plain, "ratio": t_load / t_plain, "compact_s": t_compact,
            "load_compacted_s": t_after}


def s3_storage():
    """moto's S3 server on 127.0.0.1 with fake credentials (never a real AWS endpoint)."""
    import logging

    import pyarrow.fs as pafs
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(AWS_ACCESS_KEY_ID="AKIAFAKEBENCH0000000", AWS_SECRET_ACCESS_KEY="fake", AWS_REGION="us-east-1",
                      AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT_URL=f"http://{host}:{port}",
                      AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE=os.devnull,
                      AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    pafs.S3FileSystem(endpoint_override=f"http://{host}:{port}", allow_bucket_creation=True).create_dir("bench")
    return server, "s3://bench/tables"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", type=int, nargs="+", default=[2000, 10000])
    ap.add_argument("--s3-parts", type=int, default=500, help="parts for the S3 run (0: skip it)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    results = []
    for n in args.parts:
        with tempfile.TemporaryDirectory() as tmp:
            results.append(measure(tmp, f"sweep{n}", n, args.repeats))
    if args.s3_parts:
        server, uri = s3_storage()
        try:
            results.append(measure(uri, f"sweep{args.s3_parts}", args.s3_parts, args.repeats))
        finally:
            server.stop()
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    print("| storage | parts | rows | load | plain pyarrow.dataset | ratio | compact | load after compact |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['storage']} | {r['parts']:,} | {r['rows']:,} | {r['load_s']:.2f} s | "
              f"{r['plain_pyarrow_dataset_s']:.2f} s | {r['ratio']:.2f}× | {r['compact_s']:.2f} s | "
              f"{r['load_compacted_s']:.3f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
