"""The user-preference study (sweep.study): building items from a samples table, the server's vote handling
(race-free refusal of a second vote, 4xx with nothing written), imports, the statistics, the CLI, and S3.

The test sweep is made here: a samples table written with `sweep.tables.write_part` and tiny H.264 clips from
`videoio.moving_shape_video`. The browser tests (tests/test_study_browser.py) reuse `build_sweep`.
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import json
import math
import os
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from sweep import study as S
from sweep.tables import write_part
from videoio import moving_shape_video, write_video

BASE, FULL, NOMV = "qk=off v=off", "qk=1d v=2d debias=difference", "qk=1d v=off"
VARIANTS = (BASE, FULL, NOMV)
STEPS = {BASE: [0], FULL: [100, 200], NOMV: [200]}
COLOURS = {BASE: (210, 210, 210), FULL: (230, 60, 40), NOMV: (40, 150, 235)}


def build_sweep(root: Path, *, size: int = 48, frames: int = 8, store_uri: str | None = None,
                videos: tuple[str, ...] = ("dog", "car"), prompts: tuple[str, ...] = ("a red ball", "a blue cube"),
                ) -> str:
    """A sweep folder `toy-sweep` with 3 variants × len(videos) × len(prompts) ok clips (FULL at 2 checkpoints)
    plus one error row; clips under root/clips (or uploaded to `store_uri` when given). Returns the folder."""
    from sweep.store import Store

    storage = store_uri or str(root / "storage")
    store = Store(storage)
    motion = {"dog": ((1, 0), "square"), "car": ((0, 1), "circle"), "cat": ((1, 1), "triangle")}
    rows = []

    def put(local: Path, rel: str) -> str:
        if store.is_local:
            return str(local)
        store.upload(local, rel)
        return store.uri_of(rel)

    for vid in videos:
        direction, shape = motion[vid]
        ref = put(write_video(root / "clips" / f"ref-{vid}.mp4",
                              moving_shape_video(frames, size, size, direction=direction, shape=shape)),
                  f"refs/{vid}.mp4")
        for pi, prompt in enumerate(prompts):
            for k, variant in enumerate(VARIANTS):
                for step in STEPS[variant]:
                    # the base model's motion runs the other way: the page's clips differ visibly
                    clip = moving_shape_video(frames, size, size, direction=direction if k else (-1, 0), shape=shape,
                                              color=COLOURS[variant], texture_seed=pi)
                    name = f"{vid}-{pi}-{k}-{step}.mp4"
                    path = put(write_video(root / "clips" / name, clip), f"store/videos/{name}")
                    rows.append({"variant": variant, "video": vid, "prompt": prompt, "generation_seed": 0,
                                 "checkpoint_step_applied": step, "status": "ok", "video_path": path,
                                 "source_video": ref, "sample_key": f"{vid}-{pi}-{k}-{step}"})
    rows.append({"variant": NOMV, "video": videos[0], "prompt": "a green star", "generation_seed": 0,
                 "checkpoint_step_applied": 200, "status": "error", "error": "generate: boom", "video_path": None,
                 "source_video": "missing.mp4", "sample_key": "err"})
    write_part(store, "toy-sweep", "t1", rows)
    return store.uri_of("toy-sweep")


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> str:
    return build_sweep(tmp_path_factory.mktemp("study"))


def _request(url: str, body: bytes | None = None, ctype: str = "application/json", method: str | None = None):
    req = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": ctype} if body else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read(), resp.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers


def _post(server, token, payload, raw: bytes | None = None, ctype="application/json"):
    return _request(f"{server.url}/api/{token}/vote", raw if raw is not None else json.dumps(payload).encode(), ctype)


def _part_files(sweep: str, study: str) -> dict[str, bytes]:
    folder = Path(sweep, "votes")
    return {p.name: p.read_bytes() for p in sorted(folder.glob(f"part-{study}-*.parquet"))} if folder.is_dir() else {}


# --------------------------------------------------------------------------------------------------
# Creating a study.

def test_create_study_items_pairs_checkpoint_and_raters(sweep_dir):
    study = S.create_study(sweep_dir, "all-pairs", VARIANTS, raters=4, repeats=2)
    assert study["checkpoint"] == 200  # the largest step FULL and NOMV share; the base model's 0 matches any
    items = study["items"]
    assert len(items) == 3 * 4  # 3 pairs × (2 videos × 2 prompts × 1 seed); the error row is not an item
    assert {tuple(it["pair"]) for it in items} == {(BASE, FULL), (BASE, NOMV), (FULL, NOMV)}
    assert [it["id"] for it in items] == [f"i{k:03d}" for k in range(1, 13)]
    assert all(it["prompt"] != "a green star" for it in items)
    for it in items:
        assert it["checkpoints"][it["pair"][0]] in (0, 200) and it["checkpoints"][it["pair"][1]] == 200
        assert all(Path(p).is_file() for p in (it["reference"], *it["clips"].values()))
        assert Path(it["clips"][it["pair"][0]]).name.split("-")[0] == it["video"]
    assert [q["id"] for q in study["questions"]] == ["motion", "text", "overall"]
    assert study["questions"][0]["text"] == "Which video's motion is closer to the reference?"
    on_disk = json.loads(Path(sweep_dir, "studies/all-pairs/study.json").read_text())
    assert on_disk["items"] == items and "raters" not in on_disk
    raters = S.load_raters(sweep_dir, "all-pairs")
    assert [r["id"] for r in raters] == ["r001", "r002", "r003", "r004"]
    assert len({r["token"] for r in raters}) == 4 and all(len(r["token"]) >= 20 for r in raters)
    assert not any(r["token"] in Path(sweep_dir, "studies/all-pairs/study.json").read_text() for r in raters)
    more = S.add_raters(sweep_dir, "all-pairs", 2)
    assert [r["id"] for r in more] == ["r005", "r006"] and len(S.load_raters(sweep_dir, "all-pairs")) == 6
    assert S.list_studies(sweep_dir) == sorted(S.list_studies(sweep_dir)) and "all-pairs" in S.list_studies(sweep_dir)


def test_create_study_options_and_errors(sweep_dir, tmp_path):
    s = S.create_study(sweep_dir, "ckpt100", [BASE, FULL], checkpoint=100, repeats=0)
    assert len(s["items"]) == 4 and all(it["checkpoints"][FULL] == 100 for it in s["items"])
    assert all(Path(it["clips"][FULL]).stem.endswith("-100") for it in s["items"])
    with pytest.raises(ValueError, match="no samples at checkpoint 100"):
        S.create_study(sweep_dir, "nomv100", [FULL, NOMV], checkpoint=100)
    s = S.create_study(sweep_dir, "five", VARIANTS, items=5, seed=3)
    pairs = [tuple(it["pair"]) for it in s["items"]]
    assert len(pairs) == 5 and sorted(pairs.count(p) for p in set(pairs)) == [1, 2, 2]  # balanced over pairs
    assert s["n_items_available"] == 12
    with pytest.raises(ValueError, match="no ok samples.*variants there"):
        S.create_study(sweep_dir, "bad", [BASE, "qk=9d"])
    with pytest.raises(ValueError, match="at least two"):
        S.create_study(sweep_dir, "bad", [BASE, BASE])
    with pytest.raises(ValueError, match="already exists"):
        S.create_study(sweep_dir, "five", VARIANTS)
    with pytest.raises(ValueError, match="study name"):
        S.create_study(sweep_dir, "../escape", VARIANTS)
    with pytest.raises(ValueError, match="per-rater"):
        S.create_study(sweep_dir, "pr", VARIANTS, per_rater=99)
    with pytest.raises(FileNotFoundError, match="no study 'nope'"):
        S.load_study(sweep_dir, "nope")
    assert not Path(sweep_dir, "studies", "bad").exists() and not Path(sweep_dir, "studies", "pr").exists()

    s = S.create_study(sweep_dir, "custom-q", [BASE, FULL], questions=["Which moves like the reference?",
                                                                       "Which is sharper?"])
    assert s["questions"] == [{"id": "q1", "text": "Which moves like the reference?"},
                              {"id": "q2", "text": "Which is sharper?"}]
    spec = tmp_path / "questions.yaml"
    spec.write_text('instructions: Pick one.\nquestions:\n  - {id: motion, text: "Same motion?"}\n  - Nicer?\n')
    qs, instructions = S.load_questions_file(spec)
    assert qs == [{"id": "motion", "text": "Same motion?"}, {"id": "q2", "text": "Nicer?"}]
    assert instructions == "Pick one."
    spec.write_text("questions:\n  - {id: Bad-Id, text: x}\n")
    with pytest.raises(ValueError, match="question id"):
        S.load_questions_file(spec)
    spec.write_text("questions: [unclosed\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        S.load_questions_file(spec)


def test_schedule_randomises_sides_per_rater_and_repeats_swapped(sweep_dir):
    study = S.create_study(sweep_dir, "sched", VARIANTS, repeats=3)
    seqs = {f"r{k:03d}": S.rater_schedule(study, f"r{k:03d}") for k in range(1, 21)}
    assert seqs["r001"] == S.rater_schedule(study, "r001")  # deterministic
    for seq in seqs.values():
        first = [p for p in seq if not p.repeat]
        again = [p for p in seq if p.repeat]
        assert sorted(p.item for p in first) == [it["id"] for it in study["items"]] and len(again) == 3
        for rep in again:
            orig = next(p for p in first if p.item == rep.item)
            assert (rep.left, rep.right) == (orig.right, orig.left)  # sides swapped
            assert seq.index(rep) - seq.index(orig) >= 4  # not right after the first showing
    for it in study["items"]:  # each side drawn per rater: over 20 raters both orders occur
        lefts = {next(p.left for p in seq if p.item == it["id"] and not p.repeat) for seq in seqs.values()}
        assert lefts == set(it["pair"])
    assert len({tuple(p.item for p in seq) for seq in seqs.values()}) > 1  # orders differ

    per = S.create_study(sweep_dir, "per-rater", VARIANTS, per_rater=4, repeats=1)
    seen = [p.item for k in range(3) for p in S.rater_schedule(per, f"r{k + 1:03d}", k) if not p.repeat]
    assert sorted(seen) == sorted(it["id"] for it in per["items"])  # 3 raters × 4 cover the 12 items once


# --------------------------------------------------------------------------------------------------
# Serving: votes written at once; everything else refused with nothing written.

@pytest.fixture(scope="module")
def served(sweep_dir):
    S.create_study(sweep_dir, "served", VARIANTS, raters=3, repeats=2)
    with S.RunningServer(sweep_dir, "served") as server:
        yield server


def test_server_session_hides_variants_and_serves_clips(sweep_dir, served):
    raters = S.load_raters(sweep_dir, "served")
    token = raters[0]["token"]
    assert served.host == "127.0.0.1"
    status, body, headers = _request(served.link(token))
    assert status == 200 and b"<video" in body and "script-src 'self'" in headers["Content-Security-Policy"]
    assert headers["Referrer-Policy"] == "no-referrer"
    status, body, _ = _request(f"{served.url}/api/{token}/session")
    assert status == 200
    session = json.loads(body)
    text = body.decode()
    study = S.load_study(sweep_dir, "served")
    for leak in (*VARIANTS, "qk=", "debias", sweep_dir, "clips/", "ref-", study["secret"]):
        assert leak not in text, leak  # no variant name, no file name, nothing to guess them from
    assert len(session["presentations"]) == 12 + 2 and session["answered"] == []
    assert [q["id"] for q in session["questions"]] == ["motion", "text", "overall"]
    urls = {u for p in session["presentations"] for u in (p["reference"], p["left"], p["right"])}
    assert all(u.startswith(f"/media/{token}/") and len(u.rsplit("/", 1)[1]) == 24 for u in urls)
    first = session["presentations"][0]
    status, clip, headers = _request(served.url + first["left"])
    assert status == 200 and headers["Content-Type"] == "video/mp4" and clip[4:8] == b"ftyp"
    seq = S.rater_schedule(study, raters[0]["id"])
    item = next(it for it in study["items"] if it["id"] == first["item"])
    assert clip == Path(item["clips"][seq[0].left]).read_bytes()  # "left" is the schedule's left variant
    # another rater's token does not open this rater's media ids; unknown ids and tokens are refused
    assert _request(f"{served.url}/media/{raters[1]['token']}/{first['left'].rsplit('/', 1)[1]}")[0] == 404
    assert _request(f"{served.url}/media/not-a-token/{first['left'].rsplit('/', 1)[1]}")[0] == 403
    assert _request(f"{served.url}/r/not-a-token")[0] == 404
    assert _request(f"{served.url}/api/not-a-token/session")[0] == 403


def test_server_vote_written_and_bad_votes_refused_with_nothing_written(sweep_dir, served):
    study = S.load_study(sweep_dir, "served")
    rater = S.load_raters(sweep_dir, "served")[1]
    token = rater["token"]
    seq = S.rater_schedule(study, rater["id"], 1)
    p = seq[0]
    vote = {"item": p.item, "repeat": False, "question": "text", "choice": "right", "response_ms": 2150}
    status, body, _ = _post(served, token, vote)
    assert status == 201, body
    votes = S.load_votes(sweep_dir, "served")
    assert votes.num_rows == 1
    row = votes.to_pylist()[0]
    assert row["rater"] == rater["id"] and row["item"] == p.item and row["repeat"] is False
    assert (row["left_variant"], row["right_variant"]) == (p.left, p.right)
    assert row["choice"] == "right" and row["chosen_variant"] == p.right
    assert row["question"] == "text" and row["question_text"] == "Which video matches the text better?"
    assert row["response_ms"] == 2150 and row["source"] == "server" and row["sweep"] == "toy-sweep"
    assert row["time"].tzinfo is not None and token not in json.dumps(row, default=str)
    assert votes.schema.equals(S.VOTES_SCHEMA, check_metadata=False)
    assert S.VOTES_SCHEMA.field("chosen_variant").metadata[b"doc"]
    before = _part_files(sweep_dir, "served")
    assert list(before) == [f"part-served-{rater['id']}-{p.item}-text.parquet"]

    repeated_item = next(q for q in seq if q.repeat).item
    not_repeated = next(q.item for q in seq if not q.repeat and q.item != repeated_item
                        and not any(r.repeat and r.item == q.item for r in seq))
    refused = [
        (409, _post(served, token, vote)),                                        # the same vote again
        (409, _post(served, token, {**vote, "choice": "left"})),                  # a changed mind
        (403, _post(served, "forged-token", vote)),                               # unknown rater
        (404, _post(served, token, {**vote, "item": "i999"})),                    # unknown item
        (404, _post(served, token, {**vote, "item": not_repeated, "repeat": True})),  # not repeated for this rater
        (400, _post(served, token, {**vote, "question": "colour"})),
        (400, _post(served, token, {**vote, "choice": "up"})),
        (400, _post(served, token, {**vote, "choice": None})),
        (400, _post(served, token, {**vote, "repeat": "no"})),
        (400, _post(served, token, {**vote, "response_ms": -5})),
        (400, _post(served, token, {**vote, "response_ms": "fast"})),
        (400, _post(served, token, {**vote, "left_variant": BASE})),             # the client never names variants
        (400, _post(served, token, {**vote, "item": "../../etc"})),
        (400, _post(served, token, None, raw=b"{not json")),
        (400, _post(served, token, None, raw=b"[1, 2]")),
        (400, _post(served, token, None, raw=b"NaN")),
        (415, _post(served, token, vote, ctype="text/plain")),
        (413, _post(served, token, None, raw=json.dumps({**vote, "pad": "x" * 10_000}).encode())),
        (405, _request(f"{served.url}/api/{token}/vote", method="GET")),
        (404, _request(f"{served.url}/api/{token}/elsewhere", b"{}")),
    ]
    for expected, (status, body, _) in refused:
        assert status == expected, (expected, status, body)
        assert 400 <= status < 500
    assert _part_files(sweep_dir, "served") == before  # nothing written, nothing replaced
    assert S.load_votes(sweep_dir, "served").to_pylist() == votes.to_pylist()
    assert not [f for f in Path(sweep_dir, "votes").iterdir() if f.name.startswith(".")]  # no temp files left

    # the repeat of a repeated item is its own vote; the session reports what is answered (resume after reload)
    rep = next(q for q in seq if q.repeat)
    assert _post(served, token, {"item": rep.item, "repeat": True, "question": "text", "choice": "left"})[0] == 201
    answered = json.loads(_request(f"{served.url}/api/{token}/session")[1])["answered"]
    assert sorted(map(tuple, answered)) == sorted([(p.item, False, "text"), (rep.item, True, "text")])


def test_duplicate_votes_are_race_free(sweep_dir, served):
    """20 identical votes at once through the server, and 20 writers of one key in threads: one wins."""
    rater = S.load_raters(sweep_dir, "served")[2]
    study = S.load_study(sweep_dir, "served")
    p = S.rater_schedule(study, rater["id"], 2)[0]
    vote = {"item": p.item, "repeat": False, "question": "overall", "choice": "left", "response_ms": 10}
    with cf.ThreadPoolExecutor(20) as pool:
        statuses = sorted(f.result()[0] for f in [pool.submit(_post, served, rater["token"], vote) for _ in range(20)])
    assert statuses == [201] + [409] * 19
    assert len([n for n in _part_files(sweep_dir, "served") if f"-{rater['id']}-{p.item}-overall" in n]) == 1

    state = S.StudyState(sweep_dir, "served")
    row = state.validate(rater["id"], 2, {**vote, "question": "motion"})

    def write():
        try:
            S.write_vote(state.store, row)
            return "written"
        except FileExistsError:
            return "refused"

    with cf.ThreadPoolExecutor(20) as pool:
        outcomes = sorted(pool.map(lambda _: write(), range(20)))
    assert outcomes == ["refused"] * 19 + ["written"]


def test_raters_added_while_serving_can_vote(sweep_dir, served):
    new = S.add_raters(sweep_dir, "served", 1)[0]
    import time

    time.sleep(2.1)  # unknown tokens re-read raters.json at most every 2 s
    status, body, _ = _request(f"{served.url}/api/{new['token']}/session")
    assert status == 200 and len(json.loads(body)["presentations"]) == 14


# --------------------------------------------------------------------------------------------------
# Importing votes collected elsewhere.

def test_import_votes_validated_all_or_nothing(sweep_dir, tmp_path):
    study = S.create_study(sweep_dir, "imported", [BASE, FULL], repeats=0)
    it1, it2 = study["items"][:2]
    fields = ["rater", "item", "question", "left_variant", "right_variant", "choice", "chosen_variant",
              "response_ms", "time", "repeat"]

    def write(rows, name="survey.csv"):
        p = tmp_path / name
        with open(p, "w", newline="") as f:
            w = csv.DictWriter(f, fields)
            w.writeheader()
            w.writerows(rows)
        return p

    good = [
        {"rater": "ext_1", "item": it1["id"], "question": "motion", "left_variant": BASE, "right_variant": FULL,
         "choice": "right", "response_ms": "1500", "time": "2026-01-02T03:04:05Z"},
        {"rater": "ext_1", "item": it2["id"], "question": "motion", "left_variant": FULL, "right_variant": BASE,
         "chosen_variant": BASE, "repeat": "false"},
        {"rater": "ext_2", "item": it1["id"], "question": "overall", "left_variant": FULL, "right_variant": BASE,
         "choice": "left"},
    ]
    bad_sets = [
        [*good, {**good[0]}],                                                  # duplicate inside the file
        [*good, {**good[0], "rater": "ext_3", "item": "i999"}],               # unknown item
        [*good, {**good[0], "rater": "ext_3", "question": "colour"}],         # unknown question
        [*good, {**good[0], "rater": "ext_3", "left_variant": NOMV}],         # not the item's pair
        [*good, {**good[0], "rater": "ext_3", "choice": "up"}],
        [*good, {**good[0], "rater": "ext 3"}],                               # bad rater id
        [*good, {**good[0], "rater": "ext_3", "choice": "left", "chosen_variant": FULL}],  # disagree
        [*good, {**good[0], "rater": "ext_3", "time": "yesterday"}],
    ]
    for rows in bad_sets:
        with pytest.raises(ValueError, match="nothing imported"):
            S.import_votes(sweep_dir, "imported", write(rows))
        assert S.load_votes(sweep_dir, "imported").num_rows == 0 and not _part_files(sweep_dir, "imported")

    assert S.import_votes(sweep_dir, "imported", write(good)) == 3
    votes = S.load_votes(sweep_dir, "imported").sort_by([("rater", "ascending"), ("item", "ascending")])
    rows = votes.to_pylist()
    assert [r["chosen_variant"] for r in rows] == [FULL, BASE, FULL]
    assert [r["choice"] for r in rows] == ["right", "right", "left"]
    assert rows[0]["time"].isoformat().startswith("2026-01-02T03:04:05") and rows[0]["response_ms"] == 1500
    assert {r["source"] for r in rows} == {"import:survey.csv"}
    with pytest.raises(ValueError, match="already voted"):  # importing again: every row a duplicate
        S.import_votes(sweep_dir, "imported", write(good))
    assert S.load_votes(sweep_dir, "imported").num_rows == 3

    js = tmp_path / "more.json"
    js.write_text(json.dumps({"votes": [{"rater": "ext_4", "item": it2["id"], "question": "text", "repeat": False,
                                         "left_variant": BASE, "right_variant": FULL, "choice": "left"}]}))
    assert S.import_votes(sweep_dir, "imported", js) == 1
    with pytest.raises(ValueError, match="csv, .json or .jsonl"):
        S.import_votes(sweep_dir, "imported", tmp_path / "questions.txt")


# --------------------------------------------------------------------------------------------------
# Statistics.

def _votes(rows: list[dict]) -> pa.Table:
    base = {"sweep": "s", "study": "st", "repeat": False, "question": "motion", "question_text": "q",
            "response_ms": 1, "time": None, "video": "v", "prompt": "p", "generation_seed": 0, "source": "test",
            "code_version": "x"}
    out = []
    for r in rows:
        r = {**base, **r}
        r.setdefault("choice", "left" if r["chosen_variant"] == r["left_variant"] else "right")
        out.append(r)
    return pa.Table.from_pylist(out, schema=S.VOTES_SCHEMA)


def test_pairwise_win_rates_wilson_and_binomial():
    from scipy.stats import binomtest

    rows = []
    for k in range(10):  # A vs B: A wins 8 of 10; one repeat (excluded from win rates)
        rows.append({"item": f"i{k:03d}", "rater": f"r{k % 3}", "left_variant": "A", "right_variant": "B",
                     "chosen_variant": "A" if k < 8 else "B"})
    rows.append({"item": "i000", "rater": "r0", "repeat": True, "left_variant": "B", "right_variant": "A",
                 "chosen_variant": "B"})
    rows.append({"item": "i100", "rater": "r0", "left_variant": "C", "right_variant": "A", "chosen_variant": "C"})
    pairs = S.pairwise(_votes(rows), {"st": {"compare": ["A", "B", "C"], "questions": [{"id": "motion"}]}})
    ab = pairs.to_pylist()[0]
    assert (ab["variant_a"], ab["variant_b"], ab["n_votes"], ab["wins_a"], ab["wins_b"]) == ("A", "B", 10, 8, 2)
    ref = binomtest(8, 10, 0.5)
    ci = ref.proportion_ci(method="wilson")
    assert ab["win_rate_a"] == 0.8 and math.isclose(ab["p"], ref.pvalue)
    assert math.isclose(ab["ci_low"], ci.low) and math.isclose(ab["ci_high"], ci.high)
    # Wilson by hand: (p + z²/2n ± z √(p(1−p)/n + z²/4n²)) / (1 + z²/n)
    z, n, p = 1.959963984540054, 10, 0.8
    centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (
        1 + z * z / n)
    assert math.isclose(ab["ci_low"], centre - half, rel_tol=1e-9) and math.isclose(ab["ci_high"], centre + half)
    assert ab["n_raters"] == 3 and ab["n_items"] == 10
    ac = pairs.to_pylist()[1]
    assert (ac["variant_a"], ac["variant_b"], ac["wins_a"], ac["wins_b"]) == ("A", "C", 0, 1)  # the --compare order

    pref = {r["variant"]: r for r in S.user_preference(_votes(rows)).to_pylist()}
    assert pref["A"]["n_votes"] == 11 and pref["A"]["n_wins"] == 8 and math.isclose(pref["A"]["user_preference"],
                                                                                     8 / 11)
    assert pref["C"]["user_preference"] == 1.0 and pref["B"]["n_wins"] == 2
    assert S.USER_PREFERENCE_SCHEMA.names[:3] == ["variant", "user_preference", "n_votes"]
    assert "user_preference" in __import__("vocabulary").METRICS


def test_bradley_terry_recovers_strengths_and_matches_the_mle():
    from scipy.optimize import minimize

    rng = np.random.default_rng(0)
    truth = np.array([1.0, 0.0, -1.0])
    names = ["A", "B", "C"]
    rows = []
    for rater in range(30):
        for k in range(30):
            i, j = rng.choice(3, 2, replace=False)
            win = i if rng.random() < 1 / (1 + np.exp(truth[j] - truth[i])) else j
            rows.append({"item": f"i{k:03d}", "rater": f"r{rater:02d}", "left_variant": names[i],
                         "right_variant": names[j], "chosen_variant": names[win]})
    votes = _votes(rows)
    bt = S.bradley_terry(votes, {"st": {"compare": names}}, n_boot=200).to_pylist()
    theta = np.array([r["log_strength"] for r in bt])
    assert [r["variant"] for r in bt] == names and abs(theta.sum()) < 1e-9
    assert np.all(np.abs((theta - theta.mean()) - (truth - truth.mean())) < 0.3)
    assert all(r["ci_low"] < r["log_strength"] < r["ci_high"] for r in bt)
    assert all(r["ci_low"] < t - truth.mean() < r["ci_high"] for r, t in zip(bt, truth))
    assert "bootstrap over raters" in bt[0]["method"]

    wins = np.zeros((3, 3))
    for r in rows:
        loser = r["right_variant"] if r["chosen_variant"] == r["left_variant"] else r["left_variant"]
        wins[names.index(r["chosen_variant"]), names.index(loser)] += 1
    mm = S.bradley_terry_fit(wins, prior=0.0)

    def nll(t):
        d = t[:, None] - t[None, :]
        return -(wins * (d - np.logaddexp(0, d))).sum()

    mle = minimize(nll, np.zeros(3), method="BFGS").x
    assert np.allclose(mm, mle - mle.mean(), atol=1e-4)
    # a variant that never wins keeps a finite strength (pseudo-wins), below the others
    shut = S.bradley_terry_fit(np.array([[0, 5], [0, 0]]))
    assert np.all(np.isfinite(shut)) and shut[0] > shut[1]
    single = S.bradley_terry(_votes(rows[:3]), n_boot=50).to_pylist()  # one rater: no interval
    assert single and all(r["ci_low"] is None for r in single)


def test_rater_consistency_and_votes_per_item():
    rows = [
        {"item": "i001", "rater": "r1", "left_variant": "A", "right_variant": "B", "chosen_variant": "A"},
        {"item": "i001", "rater": "r1", "repeat": True, "left_variant": "B", "right_variant": "A",
         "chosen_variant": "A"},  # same variant, other side: consistent
        {"item": "i002", "rater": "r1", "left_variant": "A", "right_variant": "B", "chosen_variant": "A"},
        {"item": "i002", "rater": "r1", "repeat": True, "left_variant": "B", "right_variant": "A",
         "chosen_variant": "B"},  # same side, other variant: inconsistent
        {"item": "i001", "rater": "r2", "left_variant": "B", "right_variant": "A", "chosen_variant": "B"},
        {"item": "i001", "rater": "r2", "repeat": True, "left_variant": "A", "right_variant": "B",
         "chosen_variant": "B"},
        {"item": "i001", "rater": "r2", "question": "text", "left_variant": "B", "right_variant": "A",
         "chosen_variant": "B"},
    ]
    cons = {(r["rater"], r["question"]): r for r in S.rater_consistency(_votes(rows)).to_pylist()}
    assert cons[("all", "all")]["n_repeated"] == 3 and cons[("all", "all")]["n_consistent"] == 2
    assert math.isclose(cons[("all", "motion")]["consistency"], 2 / 3)
    assert cons[("r1", "all")]["consistency"] == 0.5 and cons[("r2", "all")]["consistency"] == 1.0
    study = {"st": {"items": [{"id": f"i00{k}", "pair": ["A", "B"], "video": "v", "prompt": "p",
                               "generation_seed": 0} for k in (1, 2, 3)]}}
    items = {r["item"]: r for r in S.item_votes(_votes(rows), study).to_pylist()}
    assert (items["i001"]["n_votes"], items["i001"]["n_raters"], items["i001"]["n_repeat_votes"]) == (3, 2, 2)
    assert items["i003"]["n_votes"] == 0  # an item nobody voted on is listed


# --------------------------------------------------------------------------------------------------
# The command line and the report API.

def test_cli_create_links_import_results(sweep_dir, tmp_path, capsys):
    assert S.main(["create", "cli", "--sweep", sweep_dir, "--compare", BASE, FULL, "--raters", "2", "--repeats", "1",
                   "--question", "Same motion?", "--question", "Nicer?", "--base-url", "https://study.example"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and all(line.split("\t")[1].startswith("https://study.example/r/") for line in out)
    assert S.main(["links", "cli", "--sweep", sweep_dir]) == 0
    assert capsys.readouterr().out.count("http://127.0.0.1:8008/r/") == 2
    assert S.main(["add-raters", "cli", "--sweep", sweep_dir, "--raters", "1"]) == 0
    assert capsys.readouterr().out.startswith("r003\t")
    study = S.load_study(sweep_dir, "cli")
    votes = tmp_path / "votes.jsonl"
    lines = []
    for k, it in enumerate(study["items"]):
        for q, rater in (("q1", "a"), ("q2", "a"), ("q1", "b")):
            lines.append({"rater": rater, "item": it["id"], "question": q, "left_variant": BASE,
                          "right_variant": FULL, "choice": "right" if k or rater == "a" else "left"})
    votes.write_text("\n".join(json.dumps(line) for line in lines))
    assert S.main(["import", "cli", "--sweep", sweep_dir, str(votes)]) == 0
    assert "imported 12 vote(s)" in capsys.readouterr().out
    assert S.main(["results", "cli", "--sweep", sweep_dir, "--boot", "50", "--out", str(tmp_path / "res")]) == 0
    text = capsys.readouterr().out
    assert "Win rate of variant_a" in text and "Bradley–Terry" in text and "User preference" in text
    assert {p.name for p in (tmp_path / "res").iterdir()} >= {"study-cli-pairs.parquet", "study-cli-pairs.csv"}
    assert S.main(["results", "cli", "--sweep", sweep_dir, "--json", "--boot", "20"]) == 0
    data = json.loads(capsys.readouterr().out)
    q1 = next(r for r in data["pairs"] if r["question"] == "q1")
    assert (q1["variant_a"], q1["n_votes"], q1["wins_b"]) == (BASE, 8, 7)

    res = S.study_results(sweep_dir, "cli", n_boot=20)
    assert set(res) == {"pairs", "bradley_terry", "consistency", "items", "user_preference", "votes"}
    for key, schema in S.RESULT_SCHEMAS.items():
        assert res[key].schema.equals(schema, check_metadata=True), key
    pref = {r["variant"]: r for r in res["user_preference"].to_pylist()}
    assert pref[FULL]["n_votes"] == 12 and pref[FULL]["n_wins"] == 11
    assert S.user_preference(sweep_dir, study="cli", question="q2").column("n_votes").to_pylist() == [4, 4]
    assert S.main(["results", "nope", "--sweep", sweep_dir]) == 2  # a user error: message, no traceback
    assert "no study 'nope'" in capsys.readouterr().err
    assert S.main(["create", "x", "--sweep", sweep_dir, "--compare", BASE, "qk=9d"]) == 2

    # the parser plugs into another CLI's subparsers (sweep.cli wires it the same way)
    import argparse

    parser = argparse.ArgumentParser()
    S.add_study_arguments(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["study", "serve", "cli", "--sweep", sweep_dir])
    assert (args.host, args.port, args.func) == ("127.0.0.1", 8008, S.cmd_study_serve)


def test_load_votes_from_a_storage_root_and_describe(sweep_dir):
    root = str(Path(sweep_dir).parent)
    everything = S.load_votes(root)
    assert everything.num_rows == S.load_votes(sweep_dir).num_rows > 0
    assert set(S.describe_votes()) == set(S.VOTES_SCHEMA.names)
    assert S.load_votes(sweep_dir, "no-such-study").num_rows == 0


# --------------------------------------------------------------------------------------------------
# A study whose sweep (tables and clips) lives on S3.

def test_study_on_s3(tmp_path):
    pytest.importorskip("moto.server", reason="needs moto[server] (in the dev extra)")
    import logging

    import pyarrow.fs as pafs
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "AKIAFAKESTUDY0000000", "AWS_SECRET_ACCESS_KEY": "fake-study-secret",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1", "AWS_CONFIG_FILE": os.devnull,
           "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_ENDPOINT_URL": f"http://{host}:{port}"}
    try:
        with pytest.MonkeyPatch.context() as mp:
            for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
                mp.delenv(key, raising=False)
            for key, value in env.items():
                mp.setenv(key, value)
            pafs.S3FileSystem(endpoint_override=env["AWS_ENDPOINT_URL"], allow_bucket_creation=True).create_dir("bkt")
            sweep = build_sweep(tmp_path, store_uri="s3://bkt/results", videos=("dog",), prompts=("a red ball",))
            assert sweep == "s3://bkt/results/toy-sweep"
            study = S.create_study(sweep, "s3-study", [BASE, FULL], raters=1, repeats=0)
            assert study["items"][0]["clips"][FULL].startswith("s3://bkt/results/store/videos/")
            rater = S.load_raters(sweep, "s3-study")[0]
            with S.RunningServer(sweep, "s3-study") as srv:
                session = json.loads(_request(f"{srv.url}/api/{rater['token']}/session")[1])
                p = session["presentations"][0]
                status, clip, _ = _request(srv.url + p["left"])
                assert status == 200 and clip[4:8] == b"ftyp"  # read from the store, served from a local copy
                vote = {"item": p["item"], "question": "motion", "choice": "left"}
                assert _post(srv, rater["token"], vote)[0] == 201
                assert _post(srv, rater["token"], vote)[0] == 409
                assert _post(srv, rater["token"], {**vote, "choice": "nope"})[0] == 400
            votes = S.load_votes(sweep, "s3-study")
            assert votes.num_rows == 1 and votes.column("rater").to_pylist() == [rater["id"]]
    finally:
        server.stop()


def test_clips_the_browser_cannot_play_are_transcoded_once(tmp_path):
    """A gif or a folder of frames (possible reference videos) is served as an H.264 mp4, made once."""
    frames = moving_shape_video(6, 24, 24)
    gif = write_video(tmp_path / "ref.gif", frames)
    folder = tmp_path / "frames"
    folder.mkdir()
    import imageio.v3 as iio

    for i, f in enumerate(frames):
        iio.imwrite(folder / f"{i:03d}.png", f)
    cache = tmp_path / "cache"
    cache.mkdir()
    mp4 = write_video(tmp_path / "clip.mp4", frames)
    assert S._playable(str(mp4), cache) == mp4  # an mp4 is served as it is
    for src in (gif, folder):
        out = S._playable(str(src), cache)
        assert out.suffix == ".mp4" and out.parent == cache and out.read_bytes()[4:8] == b"ftyp"
        assert S._playable(str(src), cache) == out  # cached
    with pytest.raises(ValueError):
        S._playable(str(tmp_path / "missing.avi"), cache)
