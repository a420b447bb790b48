"""The command line of a user-preference study: `motion-sweep study ...` (`sweep.cli` wires `add_study_arguments`;
`python -m sweep.study ...` runs `main`).

    motion-sweep study create NAME --sweep PATH --compare VARIANT_A VARIANT_B [...] --raters 20
    motion-sweep study serve NAME --sweep PATH               # 127.0.0.1:8008; one link per rater
    motion-sweep study results NAME --sweep PATH
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sweep.results.store import Store, dumps

from .definition import (DEFAULT_REPEATS, add_raters, create_study, load_questions_file, load_raters, load_study,
                         rater_link, study_path)
from .server import DEFAULT_HOST, DEFAULT_PORT, serve
from .stats import study_results
from .vote_import import import_votes
from .votes import VOTES_DIR


def add_study_arguments(subparsers) -> argparse.ArgumentParser:
    """Add `study` with its sub-commands to an argparse subparsers object; each sets `func`."""
    p = subparsers.add_parser(
        "study", help="a user-preference study (forced choice between variants, served to raters)",
        description="Build a two-alternative forced-choice study from a sweep's clips, serve it to raters (one "
                    "link each), import votes collected elsewhere, and compute win rates and Bradley–Terry "
                    "strengths. Votes are an Arrow table (votes/ under the sweep folder).")
    sub = p.add_subparsers(dest="study_command", metavar="STUDY_COMMAND")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    def common(q):
        q.add_argument("name", help="study name (letters, digits, . _ -)")
        q.add_argument("--sweep", required=True, help="the sweep folder (STORAGE/NAME, local or s3://)")

    q = sub.add_parser("create", help="build a study from a sweep's samples",
                       description="Items: the (video, prompt, generation seed) units two compared variants share at "
                                   "the checkpoint, for every pair of --compare variants. Writes "
                                   "SWEEP/studies/NAME/study.json; with --raters, prints one link per rater.")
    common(q)
    q.add_argument("--compare", nargs="+", required=True, metavar="VARIANT",
                   help="variant ids as in the samples table (quote them: 'qk=1d v=2d debias=difference'); every "
                        "pair is compared")
    q.add_argument("--checkpoint", type=int, help="checkpoint step (default: the largest the compared variants "
                                                  "share; the base model's 0 matches any)")
    q.add_argument("--items", type=int, help="at most N items, drawn at random balanced over pairs (default: all)")
    q.add_argument("--repeats", type=int, default=DEFAULT_REPEATS,
                   help=f"items each rater sees twice, sides swapped (consistency; default {DEFAULT_REPEATS})")
    q.add_argument("--per-rater", type=int, help="items per rater, spread evenly over raters (default: all)")
    q.add_argument("--question", action="append", metavar="TEXT",
                   help="a question (repeatable; default: motion, text and overall quality questions)")
    q.add_argument("--questions", metavar="YAML", help="questions (and instructions) from a YAML file")
    q.add_argument("--title", default="Video comparison", help="page title shown to raters (no variant names)")
    q.add_argument("--seed", type=int, default=0, help="seed of the item draw")
    q.add_argument("--raters", type=int, default=0, help="create N raters now and print their links")
    q.add_argument("--base-url", default=f"http://{DEFAULT_HOST}:{DEFAULT_PORT}",
                   help="URL raters reach the server at, for the printed links")
    q.set_defaults(func=cmd_study_create)

    q = sub.add_parser("add-raters", help="add raters (random link tokens) and print their links")
    common(q)
    q.add_argument("--raters", type=int, required=True, help="how many")
    q.add_argument("--base-url", default=f"http://{DEFAULT_HOST}:{DEFAULT_PORT}", help="for the printed links")
    q.set_defaults(func=cmd_study_add_raters)

    q = sub.add_parser("links", help="print every rater's link")
    common(q)
    q.add_argument("--base-url", default=f"http://{DEFAULT_HOST}:{DEFAULT_PORT}", help="for the printed links")
    q.set_defaults(func=cmd_study_links)

    q = sub.add_parser("serve", help="serve the study page (loopback by default)",
                       description="Serve the study with aiohttp. Each vote is written at once as its own Parquet "
                                   "part; a second vote on the same item and question is refused (409). Binds "
                                   "127.0.0.1: reach it through an SSH tunnel or a TLS reverse proxy.")
    common(q)
    q.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST})")
    q.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    q.add_argument("--base-url", help="public URL for the printed links (e.g. behind a reverse proxy)")
    q.set_defaults(func=cmd_study_serve)

    q = sub.add_parser("import", help="import votes from a CSV/JSON export (validated; all or nothing)",
                       description="Columns: rater, item, question, left_variant, right_variant, choice (left/right) "
                                   "or chosen_variant; optional repeat, response_ms, time (ISO 8601).")
    common(q)
    q.add_argument("file", help="votes.csv, .json or .jsonl")
    q.set_defaults(func=cmd_study_import)

    q = sub.add_parser("results", help="win rates, Bradley–Terry strengths, rater consistency, votes per item")
    common(q)
    q.add_argument("--boot", type=int, default=0,
                   help="Bradley–Terry intervals from N percentile-bootstrap resamples over raters instead of the "
                        "rater-clustered sandwich (default 0: the sandwich; the bootstrap under-covers with ~15 "
                        "raters)")
    q.add_argument("--json", action="store_true", help="print the tables as JSON")
    q.add_argument("--out", help="also write the tables as Parquet and CSV into this folder")
    q.set_defaults(func=cmd_study_results)
    return p


def _print_links(study: str, raters: Iterable[dict], base_url: str) -> None:
    for r in raters:
        print(f"{r['id']}\t{rater_link(base_url, r['token'])}")


def cmd_study_create(args: argparse.Namespace) -> int:
    questions, instructions = (load_questions_file(args.questions) if args.questions else (None, None))
    if args.question:
        if questions:
            raise ValueError("give --question or --questions, not both")
        questions = args.question
    study = create_study(args.sweep, args.name, args.compare, checkpoint=args.checkpoint, items=args.items,
                         repeats=args.repeats, per_rater=args.per_rater, questions=questions,
                         instructions=instructions, title=args.title, seed=args.seed)
    store = Store(args.sweep)
    pairs = {tuple(it["pair"]) for it in study["items"]}
    print(f"study {args.name}: {len(study['items'])} items ({len(pairs)} pair(s), checkpoint {study['checkpoint']}), "
          f"{len(study['questions'])} question(s), {study['repeats']} repeat(s) per rater -> "
          f"{store.uri_of(study_path(args.name))}", file=sys.stderr)
    if args.raters:
        _print_links(args.name, add_raters(store, args.name, args.raters), args.base_url)
    else:
        print(f"add raters: motion-sweep study add-raters {args.name} --sweep {store.uri} --raters N", file=sys.stderr)
    return 0


def cmd_study_add_raters(args: argparse.Namespace) -> int:
    _print_links(args.name, add_raters(args.sweep, args.name, args.raters), args.base_url)
    return 0


def cmd_study_links(args: argparse.Namespace) -> int:
    load_study(args.sweep, args.name)
    _print_links(args.name, load_raters(args.sweep, args.name), args.base_url)
    return 0


def cmd_study_serve(args: argparse.Namespace) -> int:
    serve(args.sweep, args.name, host=args.host, port=args.port, base_url=args.base_url)
    return 0


def cmd_study_import(args: argparse.Namespace) -> int:
    n = import_votes(args.sweep, args.name, args.file)
    print(f"imported {n} vote(s) into {Store(args.sweep).uri_of(VOTES_DIR)}")
    return 0


def format_table(table: pa.Table, digits: int = 3) -> str:
    """A plain-text table (for the terminal)."""
    if table.num_rows == 0:
        return "(none)"
    cols = table.column_names
    cells = [[("" if v is None else f"{v:.{digits}g}" if isinstance(v, float) else str(v))
              for v in row.values()] for row in table.to_pylist()]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def cmd_study_results(args: argparse.Namespace) -> int:
    load_study(args.sweep, args.name)
    res = study_results(args.sweep, args.name, n_boot=args.boot)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        import pyarrow.csv as pacsv

        for key, table in res.items():
            Store(out).write_parquet(f"study-{args.name}-{key}.parquet", table)
            pacsv.write_csv(table, out / f"study-{args.name}-{key}.csv")
    if args.json:
        print(dumps({k: v.to_pylist() for k, v in res.items() if k != "votes"}))
        return 0
    print(f"study {args.name}: {res['votes'].num_rows} vote(s) from "
          f"{len(set(res['votes']['rater'].to_pylist()))} rater(s)\n")
    show = {"pairs": ["question", "variant_a", "variant_b", "n_votes", "n_raters", "win_rate_a", "ci_low", "ci_high",
                      "p", "design_effect"],
            "bradley_terry": ["question", "variant", "log_strength", "ci_low", "ci_high", "n_votes", "component"],
            "consistency": ["rater", "question", "n_repeated", "consistency"],
            "user_preference": ["variant", "user_preference", "ci_low", "ci_high", "n_votes", "component"]}
    titles = {"pairs": "Win rate of variant_a, raters as the unit (95% Wilson CI at votes / design effect, Rao–Scott "
                       "test of 1/2; t on raters − 1 df)",
              "bradley_terry": "Bradley–Terry log-strength (mean 0 per component; 95% CI "
                               + (f"from a bootstrap over raters, {args.boot} resamples" if args.boot > 0 else
                                  "from a rater-clustered sandwich") + "; ±inf: one-sided, never won/lost)",
              "consistency": "Rater consistency on repeated items (sides swapped)",
              "user_preference": "User preference (Bradley–Terry probability of beating a random other variant, all "
                                 "questions; rater-clustered 95% CI)"}
    for key, cols in show.items():
        table = res[key]
        if key == "consistency":
            table = table.filter(pc.equal(table["rater"], "all"))
        if key in ("bradley_terry", "user_preference") and set(table["component"].to_pylist()) <= {0}:
            cols = cols[:-1]  # one connected set of comparisons: no component to tell apart
        print(titles[key])
        print(format_table(table.select(cols)) + "\n")
        if key in ("bradley_terry", "user_preference") and len(set(table["component"].to_pylist())) > 1:
            print("(the compared pairs form unconnected components: values compare only within one)\n")
    n = res["items"]["n_votes"].to_pylist()
    if n:
        print(f"votes per item (first presentations): min {min(n)}, median {float(np.median(n)):g}, max {max(n)}")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    """`python -m sweep.study CMD ...` (the same as `motion-sweep study CMD ...`)."""
    parser = argparse.ArgumentParser(prog="motion-sweep")  # usage lines read as the real command
    sub = parser.add_subparsers(dest="command")
    add_study_arguments(sub)
    args = parser.parse_args(["study", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args) or 0
    except (ValueError, FileNotFoundError) as exc:
        print(f"motion-sweep study: error: {exc}", file=sys.stderr)
        return 2
