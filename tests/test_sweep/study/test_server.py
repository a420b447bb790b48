"""The study server (sweep.study.server): the session hides variants, clips are served by opaque ids, a vote is
written at once and a second one refused race-free (4xx with nothing written), raters added while serving, a
study whose sweep lives on S3, and clips the browser cannot play transcoded once.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from helpers.studies import BASE, FULL, VARIANTS, build_sweep, part_files
from sweep.study.definition import add_raters, create_study, load_raters, load_study
from sweep.study.schedule import rater_schedule
from sweep.study.schemas import VOTES_SCHEMA
from sweep.study.server import RunningServer, _playable
from sweep.study.state import StudyState
from sweep.study.votes import load_votes, write_vote
from videoio import moving_shape_video, write_video


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


# --------------------------------------------------------------------------------------------------
# Serving: votes written at once; everything else refused with nothing written.

@pytest.fixture(scope="module")
def served(sweep_dir):
    create_study(sweep_dir, "served", VARIANTS, raters=3, repeats=2)
    with RunningServer(sweep_dir, "served") as server:
        yield server


def test_server_session_hides_variants_and_serves_clips(sweep_dir, served):
    raters = load_raters(sweep_dir, "served")
    token = raters[0]["token"]
    assert served.host == "127.0.0.1"
    status, body, headers = _request(served.link(token))
    assert status == 200 and b"<video" in body and "script-src 'self'" in headers["Content-Security-Policy"]
    assert headers["Referrer-Policy"] == "no-referrer"
    status, body, _ = _request(f"{served.url}/api/{token}/session")
    assert status == 200
    session = json.loads(body)
    text = body.decode()
    study = load_study(sweep_dir, "served")
    for leak in (*VARIANTS, "qk=", "debias", sweep_dir, "clips/", "ref-", study["secret"]):
        assert leak not in text, leak  # no variant name, no file name, nothing to guess them from
    assert len(session["presentations"]) == 12 + 2 and session["answered"] == []
    assert [q["id"] for q in session["questions"]] == ["motion", "text", "overall"]
    urls = {u for p in session["presentations"] for u in (p["reference"], p["left"], p["right"])}
    assert all(u.startswith(f"/media/{token}/") and len(u.rsplit("/", 1)[1]) == 24 for u in urls)
    first = session["presentations"][0]
    status, clip, headers = _request(served.url + first["left"])
    assert status == 200 and headers["Content-Type"] == "video/mp4" and clip[4:8] == b"ftyp"
    seq = rater_schedule(study, raters[0]["id"])
    item = next(it for it in study["items"] if it["id"] == first["item"])
    assert clip == Path(item["clips"][seq[0].left]).read_bytes()  # "left" is the schedule's left variant
    # another rater's token does not open this rater's media ids; unknown ids and tokens are refused
    assert _request(f"{served.url}/media/{raters[1]['token']}/{first['left'].rsplit('/', 1)[1]}")[0] == 404
    assert _request(f"{served.url}/media/not-a-token/{first['left'].rsplit('/', 1)[1]}")[0] == 403
    assert _request(f"{served.url}/r/not-a-token")[0] == 404
    assert _request(f"{served.url}/api/not-a-token/session")[0] == 403


def test_server_vote_written_and_bad_votes_refused_with_nothing_written(sweep_dir, served):
    study = load_study(sweep_dir, "served")
    rater = load_raters(sweep_dir, "served")[1]
    token = rater["token"]
    seq = rater_schedule(study, rater["id"], 1)
    p = seq[0]
    vote = {"item": p.item, "repeat": False, "question": "text", "choice": "right", "response_ms": 2150}
    status, body, _ = _post(served, token, vote)
    assert status == 201, body
    votes = load_votes(sweep_dir, "served")
    assert votes.num_rows == 1
    row = votes.to_pylist()[0]
    assert row["rater"] == rater["id"] and row["item"] == p.item and row["repeat"] is False
    assert (row["left_variant"], row["right_variant"]) == (p.left, p.right)
    assert row["choice"] == "right" and row["chosen_variant"] == p.right
    assert row["question"] == "text" and row["question_text"] == "Which video matches the text better?"
    assert row["response_ms"] == 2150 and row["source"] == "server" and row["sweep"] == "toy-sweep"
    assert row["time"].tzinfo is not None and token not in json.dumps(row, default=str)
    assert votes.schema.equals(VOTES_SCHEMA, check_metadata=False)
    assert VOTES_SCHEMA.field("chosen_variant").metadata[b"doc"]
    before = part_files(sweep_dir, "served")
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
    assert part_files(sweep_dir, "served") == before  # nothing written, nothing replaced
    assert load_votes(sweep_dir, "served").to_pylist() == votes.to_pylist()
    assert not [f for f in Path(sweep_dir, "votes").iterdir() if f.name.startswith(".")]  # no temp files left

    # the repeat of a repeated item is its own vote; the session reports what is answered (resume after reload)
    rep = next(q for q in seq if q.repeat)
    assert _post(served, token, {"item": rep.item, "repeat": True, "question": "text", "choice": "left"})[0] == 201
    answered = json.loads(_request(f"{served.url}/api/{token}/session")[1])["answered"]
    assert sorted(map(tuple, answered)) == sorted([(p.item, False, "text"), (rep.item, True, "text")])


def test_duplicate_votes_are_race_free(sweep_dir, served):
    """20 identical votes at once through the server, and 20 writers of one key in threads: one wins."""
    rater = load_raters(sweep_dir, "served")[2]
    study = load_study(sweep_dir, "served")
    p = rater_schedule(study, rater["id"], 2)[0]
    vote = {"item": p.item, "repeat": False, "question": "overall", "choice": "left", "response_ms": 10}
    with cf.ThreadPoolExecutor(20) as pool:
        statuses = sorted(f.result()[0] for f in [pool.submit(_post, served, rater["token"], vote) for _ in range(20)])
    assert statuses == [201] + [409] * 19
    assert len([n for n in part_files(sweep_dir, "served") if f"-{rater['id']}-{p.item}-overall" in n]) == 1

    state = StudyState(sweep_dir, "served")
    row = state.validate(rater["id"], 2, {**vote, "question": "motion"})

    def write():
        try:
            write_vote(state.store, row)
            return "written"
        except FileExistsError:
            return "refused"

    with cf.ThreadPoolExecutor(20) as pool:
        outcomes = sorted(pool.map(lambda _: write(), range(20)))
    assert outcomes == ["refused"] * 19 + ["written"]


def test_raters_added_while_serving_can_vote(sweep_dir, served):
    new = add_raters(sweep_dir, "served", 1)[0]
    import time

    time.sleep(2.1)  # unknown tokens re-read raters.json at most every 2 s
    status, body, _ = _request(f"{served.url}/api/{new['token']}/session")
    assert status == 200 and len(json.loads(body)["presentations"]) == 14


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
            study = create_study(sweep, "s3-study", [BASE, FULL], raters=1, repeats=0)
            assert study["items"][0]["clips"][FULL].startswith("s3://bkt/results/store/videos/")
            rater = load_raters(sweep, "s3-study")[0]
            with RunningServer(sweep, "s3-study") as srv:
                session = json.loads(_request(f"{srv.url}/api/{rater['token']}/session")[1])
                p = session["presentations"][0]
                status, clip, _ = _request(srv.url + p["left"])
                assert status == 200 and clip[4:8] == b"ftyp"  # read from the store, served from a local copy
                vote = {"item": p["item"], "question": "motion", "choice": "left"}
                assert _post(srv, rater["token"], vote)[0] == 201
                assert _post(srv, rater["token"], vote)[0] == 409
                assert _post(srv, rater["token"], {**vote, "choice": "nope"})[0] == 400
            votes = load_votes(sweep, "s3-study")
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
    assert _playable(str(mp4), cache) == mp4  # an mp4 is served as it is
    for src in (gif, folder):
        out = _playable(str(src), cache)
        assert out.suffix == ".mp4" and out.parent == cache and out.read_bytes()[4:8] == b"ftyp"
        assert _playable(str(src), cache) == out  # cached
    with pytest.raises(ValueError):
        _playable(str(tmp_path / "missing.avi"), cache)
