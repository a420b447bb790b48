"""The planner: grid expansion, canonical variants, stage keys, counts, cache look-ups."""

import json
import pickle
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from sweep.results.store import Store
from sweep.run.plan import canonical_point, content_key, make_plan, plan_summary, save_plan
from sweep.spec import Spec

SEED_GRID = {"qk": ["1d", "2d"], "v": ["2d", "1d"], "remove": ["none", "qk", "v"],
             "debias": ["difference", "normalize", "none"], "seed": [0]}


def make_spec(tmp_path: Path, n_videos: int = 1, n_prompts: int = 1, axes=None, **blocks) -> Spec:
    data = []
    for i in range(n_videos):
        video = tmp_path / f"video{i}.mp4"
        video.write_bytes(f"video {i}".encode())
        data.append({"video": str(video), "source_prompt": f"source {i}",
                     "prompts": [f"prompt {i}.{j}" for j in range(n_prompts)]})
    raw = {"name": "t", "preset": "zeroscope", "storage": str(tmp_path / "results"), "data": data,
           "axes": SEED_GRID if axes is None else axes,
           "inversion": {"checkpoints": [250, 400]}, **blocks}
    return Spec.model_validate(raw)


def test_seed_grid_counts_one_pair(tmp_path):
    plan = make_plan(make_spec(tmp_path))
    s = plan_summary(plan)
    assert s["grid_points"] == 36
    assert s["canonical_variants"] == 20
    assert s["inversions"] == 8
    assert s["ddim_inversions"] == 1
    assert s["generations"] == 20 * 2  # two checkpoints
    assert s["naive_inversions"] == 36 and s["naive_generations"] == 72
    assert s["cached_inversions"] is None and s["cached_generations"] is None
    assert s["trials"] == 8 and s["variants"] == 20


def test_seed_grid_counts_scale_with_videos_and_prompts(tmp_path):
    plan = make_plan(make_spec(tmp_path, n_videos=2, n_prompts=3))
    s = plan_summary(plan)
    assert (s["grid_points"], s["canonical_variants"], s["inversions"], s["ddim_inversions"]) == (216, 120, 16, 2)
    assert s["generations"] == 240 and s["naive_generations"] == 432 and s["naive_inversions"] == 216
    assert s["variants"] == 20 and s["video_prompt_pairs"] == 6 and s["axis_points"] == 36
    work = s["work"]
    assert work["planned"] == {"ddim_inversions": 2, "inversions": 16, "generations": 240, "ddim_steps": 100,
                               "optimisation_steps": 16 * 400, "denoising_steps": 240 * 30}
    assert work["naive"]["optimisation_steps"] == 216 * 400 and work["naive"]["ddim_steps"] == 216 * 50
    # per video: 8 inversions, each carrying the generations of its designs
    per_video = {}
    for t in plan.trials:
        per_video.setdefault(t.video, []).append(t)
    assert sorted(len(v) for v in per_video.values()) == [8, 8]
    assert sum(len(t.generations) for t in plan.trials) == 240
    assert json.dumps(plan.to_dict())  # plan.json is plain JSON


def test_canonical_mapping(tmp_path):
    plan = make_plan(make_spec(tmp_path))
    by_axes = {(g.axes["qk"], g.axes["v"], g.axes["remove"], g.axes["debias"]): g for g in plan.grid_points}
    # MV removed: debias is meaningless, every debias is one sample
    no_v = {by_axes[("1d", v, "v", d)].sample_keys[0] for v in ("1d", "2d") for d in SEED_GRID["debias"]}
    assert len(no_v) == 1
    assert by_axes[("1d", "2d", "v", "none")].variant == "qk=1d v=off"
    # MQK removed: its design is meaningless
    assert by_axes[("1d", "2d", "qk", "normalize")].sample_keys == by_axes[("2d", "2d", "qk", "normalize")].sample_keys
    assert by_axes[("2d", "1d", "qk", "none")].variant == "qk=off v=1d debias=none"
    # everything present: all distinct
    full = {by_axes[(q, v, "none", d)].variant for q in ("1d", "2d") for v in ("1d", "2d") for d in SEED_GRID["debias"]}
    assert len(full) == 12
    # the rows carry canonical values
    gen = next(g for t in plan.trials for g in t.generations if g.variant == "qk=1d v=off")
    assert (gen.columns["qk_applied"], gen.columns["v_applied"], gen.columns["remove_applied"],
            gen.columns["debias_applied"]) == ("1d", "off", "v", "off")
    # inversion keys: the MV debias is a generation-stage setting, it never splits an inversion
    trial_of = {g.trial_id for g in plan.grid_points if g.axes["remove"] == "none" and g.axes["qk"] == "1d"
                and g.axes["v"] == "2d"}
    assert len(trial_of) == 1


def test_base_model_and_drop(tmp_path):
    axes = {"qk": ["1d", "2d"], "v": ["2d"], "remove": ["none", "both"], "debias": ["difference", "drop"],
            "seed": [0, 1], "inversion.lr": [0.01, 0.02]}
    plan = make_plan(make_spec(tmp_path, axes=axes))
    base = [t for t in plan.trials if t.base]
    assert len(base) == 1  # lr, seed, designs, debias: all irrelevant without embeddings
    (trial,) = base
    assert trial.inversion["steps"] == 0 and trial.checkpoints == [] and trial.seed is None
    assert trial.inversion["lr"] is None
    assert {g.checkpoint for g in trial.generations} == {0}
    assert sorted(g.seed for g in trial.generations) == [0, 1]  # the seed axis still seeds generation
    assert {g.variant for g in trial.generations} == {"qk=off v=off"}
    base_points = [g for g in plan.grid_points if g.axes["remove"] == "both"]
    assert len(base_points) == 2 * 2 * 2 * 2
    assert all(g.checkpoints == [250, 400] and g.canonical_checkpoints == [0, 0] for g in base_points)
    assert all(g.sample_keys[0] == g.sample_keys[1] for g in base_points)
    # drop is a real variant with MV present, distinct from difference
    assert "qk=1d v=2d debias=drop inversion.lr=0.01" in plan.variants
    s = plan_summary(plan)
    # optimisations: qk 2 × lr 2 × seed 2; the base model optimises nothing, naive or not
    assert s["inversions"] == 8 and s["trials"] == 9
    assert s["grid_points"] == 32 and s["naive_ddim_inversions"] == 32
    assert s["naive_inversions"] == 16  # the 16 points with embeddings
    assert s["generations"] == 8 * 2 * 2 + 2  # (trials × debias × checkpoints) + base seeds
    assert s["naive_generations"] == 16 * 2 + 16  # the naive base model generates once per point


def test_keys_are_content_addressed(tmp_path):
    spec = make_spec(tmp_path)
    a, b = make_plan(spec), make_plan(spec)
    assert [t.inversion_key for t in a.trials] == [t.inversion_key for t in b.trials]
    assert [g.sample_key for g in a.generations()] == [g.sample_key for g in b.generations()]
    # same bytes at another path: same DDIM key (keys hash content, not paths)
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "copy.mp4").write_bytes((tmp_path / "video0.mp4").read_bytes())
    moved = spec.model_copy(deep=True)
    moved.data[0].video = str(other / "copy.mp4")
    assert make_plan(moved).ddim_inversions[0].ddim_key == a.ddim_inversions[0].ddim_key
    # changed bytes: new keys everywhere
    (tmp_path / "video0.mp4").write_bytes(b"edited")
    c = make_plan(spec)
    assert c.ddim_inversions[0].ddim_key != a.ddim_inversions[0].ddim_key
    assert not {t.inversion_key for t in c.trials} & {t.inversion_key for t in a.trials}
    # a precomputed sha256 skips hashing
    spec.data[0].sha256 = "0" * 64
    assert make_plan(spec).ddim_inversions[0].fingerprint == "0" * 64


def test_steps_and_checkpoints_do_not_split_inversions(tmp_path):
    axes = {"inversion.steps": [250, 400]}
    plan = make_plan(make_spec(tmp_path, axes=axes))
    (trial,) = plan.trials
    assert trial.inversion["steps"] == 400 and trial.checkpoints == [250, 400]
    assert trial.inversion["checkpoints"] == [250, 400]
    assert [g.checkpoint for g in trial.generations] == [250, 400]
    short, long = sorted(plan.grid_points, key=lambda g: g.axes["inversion.steps"])
    assert short.checkpoints == [250] and long.checkpoints == [250, 400]
    assert short.sample_keys[0] == long.sample_keys[0]  # step 250 of a 250- or 400-step run is one thing
    assert len(plan.variants) == 1  # steps are not a variant: checkpoint_step says it
    # a longer spec reuses the same inversion key
    longer = make_plan(make_spec(tmp_path, axes={}, inversion={"steps": 800, "checkpoints": [250, 400, 800]}))
    assert longer.trials[0].inversion_key == trial.inversion_key


def test_hyperparameter_axes_and_generation_seed(tmp_path):
    axes = {"inversion.lr": [0.01, 0.02], "generation.guidance": [7.5, 12.0], "generation.seed": [5],
            "seed": [0, 1], "generation.noise_init": ["blend", "random"], "generation.noise_prior": [0.3, 0.5]}
    plan = make_plan(make_spec(tmp_path, axes=axes))
    assert len(plan.trials) == 4  # lr × seed
    gens = plan.generations()
    assert {g.seed for g in gens} == {5}  # generation.seed overrides the seed axis for generation
    # noise_prior only matters with blend init: random × {0.3, 0.5} is one generation
    assert len({g.generation_key for g in gens}) == 4 * 2 * 2 * (2 + 1)
    variant = next(iter(plan.variants))
    assert variant.startswith("qk=1d v=2d debias=difference inversion.lr=")
    assert any("generation.noise_init=random" in v and "noise_prior" not in v for v in plan.variants)
    g = gens[0]
    assert {"inversion.lr_applied", "generation.guidance_applied", "generation.seed_applied"} <= set(g.columns)
    table = plan.grid_table()
    assert "inversion.lr" in table.column_names and table.num_rows == len(plan.grid_points) * 2


def test_source_prompt_is_part_of_the_inversion(tmp_path):
    spec = make_spec(tmp_path, axes={})
    spec.data.append(spec.data[0].model_copy(update={"source_prompt": "another description"}))
    plan = make_plan(spec)
    assert len(plan.ddim_inversions) == 1 and len(plan.trials) == 2


def test_trials_travel_to_workers(tmp_path):
    plan = make_plan(make_spec(tmp_path))
    assert json.loads(json.dumps(plan.to_dict()))["trials"][0]["trial_id"] == plan.trials[0].trial_id
    assert pickle.loads(pickle.dumps(plan)).trials == plan.trials


def test_cached_counts_come_from_the_store(tmp_path):
    spec = make_spec(tmp_path)
    plan = make_plan(spec)
    store = Store(spec.storage)
    s = plan_summary(plan, store)
    assert (s["cached_inversions"], s["cached_generations"], s["cached_ddim_inversions"]) == (0, 0, 0)
    t = plan.trials[0]
    store.write_bytes_atomic(store.inversion_step_path(t.inversion_key, 250), b"x")
    assert plan_summary(plan, store)["cached_inversions"] == 0  # 400 is still missing
    store.write_bytes_atomic(store.inversion_step_path(t.inversion_key, 400), b"x")
    store.write_bytes_atomic(store.ddim_path(t.ddim_key), b"x")
    for g in t.generations[:3]:
        store.put_sample(g.sample_key, {"status": "ok"})
    s = plan_summary(plan, store)
    assert (s["cached_inversions"], s["cached_generations"], s["cached_ddim_inversions"]) == (1, 3, 1)


def test_save_plan_writes_plan_and_grid(tmp_path):
    spec = make_spec(tmp_path)
    plan = make_plan(spec)
    store = Store(spec.storage)
    save_plan(store, plan)
    saved = store.read_json("t/plan.json")
    assert saved["summary"]["grid_points"] == 36 and len(saved["trials"]) == 8
    grid = pq.read_table(Path(spec.storage) / "t" / "grid.parquet")
    assert grid.num_rows == 72
    assert set(grid["sample_key"].to_pylist()) == {g.sample_key for g in plan.generations()}


def test_canonical_point_and_content_key():
    assert content_key({"b": 1, "a": [1.0, "x"]}) == content_key({"a": [1.0, "x"], "b": 1})
    assert len(content_key({})) == 16


@pytest.mark.parametrize("remove, expected", [("none", ("1d", "2d", "difference")), ("qk", ("off", "2d", "difference")),
                                              ("v", ("1d", "off", "off")), ("both", ("off", "off", "off"))])
def test_canonical_point_table(tmp_path, remove, expected):
    spec = make_spec(tmp_path, axes={})
    canon = canonical_point(spec, {"qk": "1d", "v": "2d", "remove": remove, "debias": "difference", "seed": 3})
    assert (canon["qk"], canon["v"], canon["debias"]) == expected
    assert canon["base"] == (remove == "both")
    assert canon["seed"] == (None if remove == "both" else 3) and canon["generation_seed"] == 3
