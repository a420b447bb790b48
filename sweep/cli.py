"""The `motion-sweep` command line.

Heavy libraries (torch, diffusers, Ray) are imported inside each command so `--help` is instant.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except USER_ERRORS + _user_error_types() as exc:
        print(f"motion-sweep {args.command}: error: {exc}", file=sys.stderr)
        return 2


def _user_error_types() -> tuple[type[BaseException], ...]:
    """Errors that mean "your input is wrong" (printed without a traceback), from modules already loaded."""
    types: list[type[BaseException]] = []
    if "model.presets" in sys.modules:
        types.append(sys.modules["model.presets"].ModelNotFoundError)
    if "evaluation" in sys.modules and hasattr(sys.modules["evaluation"], "EvaluationError"):
        types.append(sys.modules["evaluation"].EvaluationError)
    if "sweep.run.preflight" in sys.modules:
        preflight = sys.modules["sweep.run.preflight"]
        types += [preflight.StorageError, preflight.WorkerVisibilityError]
    return tuple(types)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="motion-sweep",
        description="Motion Inversion (arXiv 2403.20193) from the command line: learn motion embeddings from a "
                    "reference video, generate new videos with them, score videos, and run ablation sweeps on Ray.",
        epilog="Start with `motion-sweep demo`. Each command has its own --help.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    from model.cli import add_generate_arguments, add_invert_arguments  # light: argparse + vocabulary

    p = sub.add_parser("invert", help="learn motion embeddings from one reference video",
                       description="Learn motion embeddings (Motion Query-Key / Motion Value) from one reference "
                                   "video. Writes the embeddings at each checkpoint step plus the cached reference "
                                   "(latent and DDIM-inverted noise) to OUT, ready for `motion-sweep generate`.")
    add_invert_arguments(p).set_defaults(func=cmd_invert)

    p = sub.add_parser("generate", help="generate a video with learned motion embeddings",
                       description="Generate videos for new prompts with the motion learned by `motion-sweep "
                                   "invert`. Several --prompt/--seed values make one video each.")
    add_generate_arguments(p).set_defaults(func=cmd_generate)

    from evaluation.cli import add_score_arguments  # light: argparse only

    p = sub.add_parser("score", help="score a generated video against its reference and prompt",
                       description="Every metric for one generated video (any size and length; the reference is "
                                   "resampled to it): CLIP text similarity, temporal consistency, appearance "
                                   "leakage, DMT motion fidelity (published and two-way), and the backbones used.")
    add_score_arguments(p)
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("plan", help="show what a sweep spec would run (and what the store already holds)",
                       description="Expand the spec's grid over every video × prompt, map grid points to canonical "
                                   "variants, and count DDIM inversions, embedding optimisations and generations, "
                                   "against a naive one-trial-per-grid-point sweep. On a GPU preset, also each "
                                   "trial's predicted peak GPU memory and GPU-seconds on every GPU type cluster.yaml "
                                   "names (model.cost's cost model), and a warning when a trial will not fit the GPU "
                                   "share its resources.gpu asks for.")
    p.add_argument("spec", help="sweep spec (YAML)")
    p.add_argument("--json", action="store_true", help="print the counts (and GPU predictions) as JSON")
    _add_gpu_arguments(p)
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("run", help="run a sweep spec on Ray (local or a cluster)",
                       description="Run the spec: one Ray Tune trial per inversion (and its search, if it has a "
                                   "`search:` block), rows written to Parquet under the spec's storage, Tune's "
                                   "experiment under STORAGE/NAME/tune/. Re-running a spec resumes it: an "
                                   "interrupted Tune run is restored, finished trials are read from the store.")
    p.add_argument("spec", help="sweep spec (YAML)")
    p.add_argument("--address", default="local",
                   help="local (start Ray here; default), auto (the cluster this machine belongs to) or ray://host:port")
    p.add_argument("--max-concurrent", type=int, help="at most N trials at once (default: as resources allow)")
    p.add_argument("--num-cpus", type=int, help="CPUs for a local Ray (default: all)")
    p.add_argument("--max-failures", type=int, default=2,
                   help="retries of a failed trial, each from its last Tune checkpoint (default: %(default)s)")
    p.add_argument("--retry-errors", action="store_true",
                   help="run again the trials whose rows are errors (e.g. a transient CUDA out-of-memory), "
                        "replacing those rows; the exit status is 1 while any error row remains")
    p.add_argument("--preflight-timeout", type=float, metavar="SECONDS",
                   help="how long to wait for the first worker that fits a trial, e.g. a GPU node's cold start "
                        "with image pull and setup (default: sweep.run.preflight.PREFLIGHT_TIMEOUT_S, 30 min)")
    p.add_argument("--no-report", action="store_true",
                   help="don't write the report at the end (summary.md, report/index.html; `motion-sweep report` does)")
    p.add_argument("--verbose", action="store_true", help="show Tune's own output (its status table, trial logs)")
    _add_gpu_arguments(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="the whole seed ablation grid in the toy world (shipped weights, no GPU)",
                       description="Run the seed grid (qk × v × remove × debias) on two reference clips on a local "
                                   "Ray, print the summary and write the HTML report. Default: the toy world (a tiny "
                                   "text-to-video model and CLIP trained on moving shapes, weights shipped in "
                                   "model/toy_world, rebuilt by `python -m toyworld build`): the method transfers "
                                   "each clip's motion to another shape, so the numbers mean something, in miniature. "
                                   "--preset tiny: random weights, the same plumbing in seconds, numbers that mean "
                                   "nothing. With --search: a small random search (learning rate × MQK design, 6 "
                                   "samples, tiny preset) whose weaker samples ASHA stops at steps 4, 8, 16.")
    p.add_argument("--preset", choices=("toy", "tiny"), default="toy",
                   help="toy (default): the toy world trained on moving shapes; tiny: random weights, plumbing only")
    p.add_argument("--storage", default="./demo-results", help="where tables and videos go (default ./demo-results)")
    p.add_argument("--num-cpus", type=int, help="CPUs for the local Ray (default: all)")
    p.add_argument("--search", action="store_true", help="run the search demo instead of the grid")
    p.add_argument("--verbose", action="store_true", help="show Tune's own output (its status table, trial logs)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("report", help="summarize a sweep: paper-style table, CIs, FID/KID, paired tests",
                       description="Group the samples by variant and checkpoint: means with 95% CIs over "
                                   "videos, error counts, FID/KID against real frames (the spec's reference_set, "
                                   "else the sweep's own reference videos), and every variant compared with a "
                                   "baseline on matched units (the mean per-video difference: an exact sign-flip and a "
                                   "bootstrap-t test over videos, Holm-adjusted), and the factorial effects of the "
                                   "design axes (MQK design x MV design x debias, with a mixed model's variance "
                                   "shares). Prints the report; writes summary.md and summary.csv, the comparisons "
                                   "and effects tables as <sweep>/comparisons.parquet and effects.parquet, and a browsable HTML report (plots, a "
                                   "gallery of every clip next to its reference, errors) as report/index.html "
                                   "beside summary.md; it opens from disk, offline. Re-run it as rows land.")
    p.add_argument("path", help="a sweep folder (STORAGE/NAME) or a storage root")
    p.add_argument("--out", help="folder for summary.md/summary.csv (default: PATH)")
    p.add_argument("--baseline", metavar="VARIANT",
                   help="variant id every other variant is compared with (default: the paper's full method, "
                        "qk=1d v=2d debias=difference; one per hyperparameter setting when several)")
    p.add_argument("--n-boot", type=int, default=9999, help="bootstrap resamples per CI (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: %(default)s)")
    p.add_argument("--open", action="store_true", help="open the HTML report in the default web browser")
    p.set_defaults(func=cmd_report)

    from .study.cli import add_study_arguments

    add_study_arguments(sub)

    p = sub.add_parser("tables", help="what the result tables hold, column by column",
                       description="List the result tables (samples, inversions, references, comparisons, grid, "
                                   "points) and, with --describe, every column and what it holds.")
    p.add_argument("--describe", action="store_true", help="describe every column")
    p.add_argument("--json", action="store_true", help="print the descriptions as JSON")
    p.set_defaults(func=cmd_tables)

    p = sub.add_parser("compact", help="merge a sweep's finished part files into one file per table",
                       description="Merge each table's finished part files (and earlier compacted files) into one "
                                   "compacted file, so loading reads a few files instead of thousands. Readers "
                                   "see the same rows before, during and after (a compaction killed midway "
                                   "included); a part rewritten later replaces its rows. Safe beside a running "
                                   "sweep: parts changed in the last --min-age seconds wait for the next time.")
    p.add_argument("path", help="a sweep folder or a storage root (local or s3://…)")
    p.add_argument("--table", action="append", choices=("samples", "inversions", "references"),
                   help="only this table (repeatable; default: all three)")
    p.add_argument("--min-age", type=float, default=60.0, metavar="SECONDS",
                   help="leave parts younger than this (default: %(default)g)")
    p.set_defaults(func=cmd_compact)
    return parser


def _add_gpu_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cluster", metavar="PATH",
                   help="the Ray cluster config whose GPU types a trial's predicted memory and time are given for "
                        "(default: ./cluster.yaml, else the repository's)")
    p.add_argument("--gpu-type", metavar="TYPE",
                   help="predict for and check against this GPU type only (vocabulary.GPU_TYPES, e.g. A10G, A100-80GB)")


def cmd_invert(args: argparse.Namespace) -> int:
    from model.cli import run_invert

    return run_invert(args)


def cmd_generate(args: argparse.Namespace) -> int:
    from model.cli import run_generate

    return run_generate(args)


def cmd_score(args: argparse.Namespace) -> int:
    from evaluation.cli import run_score

    return run_score(args)


def cmd_plan(args: argparse.Namespace) -> int:
    from .results.store import Store
    from .run.gpu_budget import budget_json, format_budget, plan_budget
    from .run.plan import format_summary, make_plan, plan_summary
    from .spec import load_spec

    spec = load_spec(args.spec)
    plan = make_plan(spec)
    summary = plan_summary(plan, Store(spec.storage))
    budget, warnings = plan_budget(plan, args.cluster, args.gpu_type)  # None: no trial on a GPU preset
    if args.json:
        print(json.dumps({**summary, **(budget_json(budget) if budget else {})}, indent=2))
    else:
        block = format_budget(budget, spec.resources.gpu) if budget else ""
        print(format_summary(summary) + ("\n" + block if block else ""))
    for line in warnings:
        print(f"motion-sweep plan: warning: {line}", file=sys.stderr)
    return 0


def _print_run(summary) -> int:
    if summary.trials:
        print(f"{summary.sweep}: {summary.ran} trial(s) run, {summary.skipped} already complete, "
              f"{summary.ddim_inversions} DDIM inversion(s), {summary.seconds:.1f} s"
              + (" (interrupted Tune run restored)" if summary.restored else ""), file=sys.stderr)
    if summary.search:
        from .run.search import format_search

        print(format_search(summary.search) + (" (restored)" if summary.search_restored else ""), file=sys.stderr)
    for trial_id, error in summary.failed.items():
        print(f"  FAILED {trial_id}: {error}", file=sys.stderr)
    if summary.retried:
        print(f"{summary.sweep}: {summary.retried} trial(s) with error rows run again (--retry-errors)", file=sys.stderr)
    if summary.error_rows:
        shown = ", ".join(summary.error_trials[:5]) + (" …" if len(summary.error_trials) > 5 else "")
        print(f"{summary.sweep}: {summary.error_rows} error row(s) in {len(summary.error_trials)} trial(s) ({shown}) "
              f"in {summary.storage}/samples; their messages: load({summary.storage!r}).filter(status == 'error'), "
              "or `motion-sweep report`. Run again with --retry-errors to retry them.", file=sys.stderr)
    print(f"tables: {summary.storage}  (from sweep import load; load({summary.storage!r}))")
    for what, path in (("grid", summary.experiment_path), ("search", summary.search_experiment_path)):
        if path:  # Tune's own results: the ResultGrid, TensorBoard (HParams), progress files
            print(f"Tune experiment ({what}): {path}  (ResultGrid: sweep.run.tune.result_grid({path!r}); "
                  f"tensorboard --logdir {path})")
    if summary.search:
        print(f"search summary: {summary.storage}/search.json  (load({summary.storage!r}, table='search'))")
    return 1 if summary.failed or summary.error_rows else 0


def cmd_run(args: argparse.Namespace) -> int:
    from .run.runner import run_sweep
    from .spec import load_spec

    spec = load_spec(args.spec)
    summary = run_sweep(spec, address=args.address, max_concurrent=args.max_concurrent, num_cpus=args.num_cpus,
                        max_failures=args.max_failures, retry_errors=args.retry_errors, verbose=int(args.verbose),
                        cluster=args.cluster, gpu_type=args.gpu_type,
                        **({"preflight_timeout": args.preflight_timeout} if args.preflight_timeout else {}))
    code = _print_run(summary)
    if not args.no_report and spec.has_grid:
        _print_answer(summary.storage)
    return code


def _print_answer(storage: str, n_boot: int = 9999) -> None:
    """The end of `run` and `demo`: the paper-style table and where the report is (summary.md holds the rest)."""
    from .report import html_report_path, report

    print()
    report(storage, n_boot=n_boot, brief=True)  # its first line says toy world (or random-weight backbones)
    print(f"report: {html_report_path(storage)}  (motion-sweep report {storage} --open)")


def cmd_demo(args: argparse.Namespace) -> int:
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # local Ray binds 127.0.0.1
    if args.search:
        from .demo import demo_search_spec
        from .run.runner import run_sweep

        summary = run_sweep(demo_search_spec(args.storage), address="local", num_cpus=args.num_cpus,
                            verbose=int(args.verbose))
        return _print_run(summary)
    from .demo import demo_spec
    from .run.runner import run_sweep

    if args.preset == "toy":
        from vocabulary import TOY_WORLD_DIR

        if not (TOY_WORLD_DIR / "pipeline" / "model_index.json").is_file():
            print(f"motion-sweep demo --preset toy: the toy world's weights are not in {TOY_WORLD_DIR}; build "
                  "them once with `python -m toyworld build` (about 80 min on 2 CPU cores, minutes on a GPU), or "
                  "run the plumbing demo: `motion-sweep demo --preset tiny`", file=sys.stderr)
            return 2
    spec = demo_spec(args.storage, name="demo" if args.preset == "toy" else "demo-tiny", preset=args.preset)
    summary = run_sweep(spec, address="local", num_cpus=args.num_cpus, verbose=int(args.verbose))
    code = _print_run(summary)
    _print_answer(summary.storage, n_boot=2000)
    return code


def cmd_report(args: argparse.Namespace) -> int:
    from .report import html_report_path, report

    report(args.path, args.out, baseline=args.baseline, n_boot=args.n_boot, seed=args.seed)
    index = html_report_path(args.path, args.out)
    print(f"report: {index}")
    if args.open:
        import webbrowser

        if not webbrowser.open(index.as_uri()):
            print(f"motion-sweep report: no web browser found; open {index.as_uri()}", file=sys.stderr)
    return 0


def cmd_tables(args: argparse.Namespace) -> int:
    from .results.schemas import describe_tables

    tables = describe_tables()
    if args.json:
        print(json.dumps(tables, indent=2, ensure_ascii=False))
        return 0
    for name, columns in tables.items():
        print(f"{name} ({len(columns)} columns)" if args.describe else name)
        if args.describe:
            width = max(len(c) for c in columns)
            for column, doc in columns.items():
                print(f"  {column:<{width}}  {doc}")
    return 0


def cmd_compact(args: argparse.Namespace) -> int:
    from .results.schemas import SCHEMAS
    from .results.tables import compact

    done = compact(args.path, tuple(args.table or SCHEMAS), min_age_s=args.min_age)
    for sweep, tables in done.items():
        print(f"{sweep}: " + ", ".join(f"{t} {n} file{'s' if n != 1 else ''}" for t, n in tables.items())
              + " compacted")
    if not done:
        print("nothing to compact")
    return 0


if __name__ == "__main__":
    sys.exit(main())
