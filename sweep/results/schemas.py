"""The result tables' schemas: every column, its type and what it holds, said once (in field metadata).

Tables under a sweep folder `<storage>/<sweep>/`:

* `samples/part-<trial>.parquet`: one row per **canonical** sample (a generated clip at one checkpoint,
  scored once). Its design columns hold the values that ran (`qk_applied` is "off" when MQK was removed,
  `debias_applied` "off" without MV, `checkpoint_step_applied` 0 for the base model). Error rows have
  status "error", the message, and null metrics.
* `inversions/part-<inversion_key>.parquet`: one row per inversion (loss curve, steps, seconds).
* `grid.parquet` (written by `sweep.run.plan.save_plan`): one row per *requested* grid point × checkpoint with
  the requested axis values (`qk`, `debias`, `checkpoint_step`, ...) and the `sample_key` that answers it.
* `references/part-<key>.parquet`: FID/KID features of real frames, one row per reference video and FID
  backbone: the sweep's own reference videos (written by the trials, once per ddim_key × backbone) and, when
  the spec names a `reference_set`, each of its videos (written by the runner before the trials).
* `comparisons.parquet` (written by `sweep.report.report`): paired differences of every variant against the
  baseline, one row per variant × metric × checkpoint.
* `effects.parquet` (written by `sweep.report.report`): the factorial effects of the design factors (main effects,
  two-way interactions, variance shares; the removals copied from comparisons), one row per subset × metric ×
  checkpoint × term.
* `search.parquet` (written by a search, `sweep.run.search`): one row per search sample.

Column names follow `vocabulary`'s rule: an axis name holds the requested value, `<axis>_applied` the
value that ran. Requested points are answered by a join, not by duplicated rows: `load(path, "points")`
gives one row per requested grid point × checkpoint with both. `describe_tables()` (and
`motion-sweep tables --describe`) lists every column with what it holds.
"""

from __future__ import annotations

import pyarrow as pa

from vocabulary import DESIGN_AXES, METRICS, SAMPLE_METRICS, applied

TABLES = ("samples", "inversions", "references", "comparisons", "effects", "grid", "points", "search")

_timestamp = pa.timestamp("us", tz="UTC")


def doc_field(name: str, typ: pa.DataType, doc: str) -> pa.Field:
    """An Arrow field whose "doc" metadata says what the column holds (describe_tables() lists them)."""
    return pa.field(name, typ, metadata={"doc": doc})


_IDENTITY = [
    doc_field("sweep", pa.string(), "sweep name (the spec's `name`)"),
    doc_field("trial_id", pa.string(), "Tune trial that produced the row (= its inversion key)"),
]
_DATA = [
    doc_field("video", pa.string(), "reference video id (the data item's `id`, default its file stem)"),
    doc_field("source_video", pa.string(), "reference video path or URI"),
    doc_field("source_prompt", pa.string(), "text describing the reference video (conditions the inversion)"),
]
_PROVENANCE = [
    doc_field("preset", pa.string(), "model preset (vocabulary.PRESETS)"),
    doc_field("base_model", pa.string(), "hub id or local folder of the base model's weights"),
    doc_field("config", pa.string(), "JSON of every inversion/generation setting that produced the row"),
]
_BOOKKEEPING = [
    doc_field("status", pa.string(), "ok | error"),
    doc_field("error", pa.string(), "what failed (stage: message) on error rows"),
    doc_field("device", pa.string(), "where it ran: cpu or cuda:<GPU name>"),
    doc_field("code_version", pa.string(), "motion-sweep package version that wrote the row"),
    doc_field("created_at", _timestamp, "when the row was written (UTC)"),
]

SAMPLES_SCHEMA = pa.schema([
    *_IDENTITY,
    doc_field("sample_key", pa.string(), "content hash of the scored sample (generation + metric settings)"),
    doc_field("generation_key", pa.string(), "content hash of the generated clip"),
    doc_field("inversion_key", pa.string(), "content hash of the learned embeddings it used"),
    doc_field("ddim_key", pa.string(), "content hash of the reference's cached latent and DDIM inversion"),
    doc_field("variant", pa.string(), "readable canonical variant id, e.g. 'qk=1d v=2d debias=difference'"),
    doc_field("variant_key", pa.string(), "content hash of the canonical variant"),
    doc_field(applied("qk"), pa.string(), "MQK design that ran: 1d | 2d | off"),
    doc_field(applied("v"), pa.string(), "MV design that ran: 2d | 1d | off"),
    doc_field(applied("remove"), pa.string(), "components absent from the variant: none | qk | v | both"),
    doc_field(applied("debias"), pa.string(), "MV debias applied at generation; off when there is no MV"),
    doc_field(applied("seed"), pa.int64(), "optimisation seed (null for the base model: nothing optimised)"),
    doc_field("generation_seed", pa.int64(), "noise seed of the generation"),
    doc_field(applied("checkpoint_step"), pa.int64(), "inversion step of the embeddings used (0: base model)"),
    *_DATA,
    doc_field("prompt", pa.string(), "edit prompt the clip was generated from"),
    *_PROVENANCE,
    *[doc_field(m, pa.float64(), f"{METRICS[m].description} ({'higher' if METRICS[m].higher_is_better else 'lower'}"
                              " is better); null on error rows") for m in SAMPLE_METRICS],
    doc_field("fid_features", pa.list_(pa.list_(pa.float32())),
           "FID/KID feature vector of each kept frame ([frames][dim]; every frame unless fid_frames > 0)"),
    doc_field("unavailable", pa.string(), "'metric: reason; ...' for metrics that could not be computed"),
    doc_field("clip_backbone", pa.string(), "open_clip model of the CLIP metrics"),
    doc_field("clip_pretrained", pa.bool_(), "false: CLIP with random weights (plumbing numbers)"),
    doc_field("tracker", pa.string(), "point tracker of motion fidelity: lk (Lucas–Kanade) | cotracker3"),
    doc_field("tracker_checkpoint", pa.string(), "tracker weights (file or pinned torch.hub repo)"),
    doc_field("grid_size", pa.int64(), "requested tracking grid side (DMT: 55)"),
    doc_field("motion_filter", pa.string(), "which tracks entered motion_fidelity"),
    doc_field("motion_camera", pa.float64(), "motion_fidelity's camera term (null when neither clip's camera moves)"),
    doc_field("motion_objects", pa.float64(), "motion_fidelity's objects term (null when no reference track moves "
              "relative to the scene)"),
    doc_field("fid_backbone", pa.string(), "feature extractor of fid_features"),
    doc_field("fid_frames", pa.int64(), "setting: frames per clip whose FID features are kept, evenly spaced (0: all)"),
    doc_field("pretrained_metrics", pa.bool_(), "true only when every learned metric backbone had trained weights"),
    doc_field("evaluation_version", pa.string(), "version of the metric definitions"),
    doc_field("motion_grid", pa.int64(), "tracking grid side used (clipped to fit the frame)"),
    doc_field("motion_tracks", pa.int64(), "generated tracks that entered motion_fidelity"),
    doc_field("motion_tracks_reference", pa.int64(), "reference tracks that entered motion_fidelity"),
    doc_field("motion_mask", pa.string(), "the moving-track rule of motion_fidelity, in pixels for this clip size"),
    doc_field("motion_mask_fallback", pa.bool_(), "true: nothing moved in the reference, so every visible track "
                                               "entered motion_fidelity (then it equals motion_fidelity_dmt)"),
    doc_field("video_path", pa.string(), "the generated clip (path or URI)"),
    *_BOOKKEEPING[:3],
    doc_field("invert_seconds", pa.float64(), "wall time of the embeddings' optimisation"),
    doc_field("generate_seconds", pa.float64(), "wall time of the generation (per clip of its batch)"),
    doc_field("score_seconds", pa.float64(), "wall time of scoring the clip"),
    doc_field("seconds_clip", pa.float64(), "scoring: CLIP embeddings and cosines"),
    doc_field("seconds_motion", pa.float64(), "scoring: tracking and the DMT score"),
    doc_field("seconds_fid", pa.float64(), "scoring: FID features"),
    doc_field("inversion_cached", pa.bool_(), "the embeddings came from the store (not optimised by this trial)"),
    *_BOOKKEEPING[3:],
])
# Swept hyperparameter axes are extra columns named `<axis>_applied` ("inversion.lr_applied"), typed from their
# values: the value that ran, null where the setting means nothing (the base model's learning rate).

INVERSIONS_SCHEMA = pa.schema([
    *_IDENTITY,
    doc_field("inversion_key", pa.string(), "content hash of the learned embeddings"),
    doc_field("ddim_key", pa.string(), "content hash of the reference's cached latent and DDIM inversion"),
    *_DATA,
    doc_field(applied("qk"), pa.string(), "MQK design that ran: 1d | 2d | off"),
    doc_field(applied("v"), pa.string(), "MV design that ran: 2d | 1d | off"),
    *_PROVENANCE[:2],
    doc_field(applied("seed"), pa.int64(), "optimisation seed (null for the base model)"),
    doc_field("steps", pa.int64(), "optimisation steps run"),
    doc_field("checkpoints", pa.list_(pa.int64()), "steps whose embeddings were saved"),
    _PROVENANCE[2],
    doc_field("loss_curve", pa.list_(pa.float32()), "training loss at every step"),
    doc_field("seconds", pa.float64(), "wall time of the optimisation"),
    doc_field("ddim_seconds", pa.float64(), "wall time of the DDIM inversion"),
    doc_field("cached", pa.bool_(), "the embeddings came from the store"),
    *_BOOKKEEPING,
])

REFERENCES_SCHEMA = pa.schema([
    doc_field("sweep", pa.string(), "sweep name"),
    doc_field("reference_key", pa.string(), "which real clip: the ddim_key of a sweep video, or "
                                         "'<reference set key>/<video id>'"),
    doc_field("source", pa.string(), "sweep_videos (the sweep's own reference videos) | reference_set (spec's)"),
    doc_field("video", pa.string(), "video id (a sweep video's id, or the reference set entry's id)"),
    doc_field("source_video", pa.string(), "video path or URI"),
    doc_field("reference_set", pa.string(), "the spec's reference_set (folder or manifest); null for sweep videos"),
    doc_field("ddim_key", pa.string(), "content hash of the frames as prepared for the model (sweep videos)"),
    doc_field("content_hash", pa.string(), "hash of the source (a sweep video: its fingerprint; a reference set entry: its "
                                         "decoded frames); one clip twice is refused"),
    doc_field("height", pa.int64(), "frame height fed to the backbone (the generated clips' size)"),
    doc_field("width", pa.int64(), "frame width fed to the backbone"),
    doc_field("n_frames", pa.int64(), "frames with features (every frame of the clip)"),
    doc_field("dim", pa.int64(), "feature dimension"),
    doc_field("fid_features", pa.list_(pa.list_(pa.float32())), "FID/KID feature vector of each frame ([frames][dim])"),
    doc_field("fid_backbone", pa.string(), "feature extractor (equals the samples' fid_backbone it serves)"),
    doc_field("pretrained_metrics", pa.bool_(), "the extractor had trained weights"),
    doc_field("evaluation_version", pa.string(), "version of the metric definitions"),
    *_BOOKKEEPING,
])

COMPARISONS_SCHEMA = pa.schema([
    doc_field("sweep", pa.string(), "sweep name"),
    doc_field("baseline", pa.string(), "variant compared against (default: the paper's full method)"),
    doc_field("variant", pa.string(), "variant compared"),
    doc_field("metric", pa.string(), "metric (vocabulary.METRICS)"),
    doc_field("higher_is_better", pa.bool_(), "direction of the metric"),
    doc_field("checkpoint", pa.int64(), "checkpoint step of the comparison (the non-base side's; the base model's "
                                     "single step 0 matches every step)"),
    doc_field("variant_checkpoint", pa.int64(), "the variant's step in the comparison (0 for the base model)"),
    doc_field("baseline_checkpoint", pa.int64(), "the baseline's step in the comparison"),
    doc_field("n_units", pa.int64(), "matched units (video, prompt, generation seed) with a value on both sides"),
    doc_field("n_unmatched", pa.int64(), "units with a value on one side only (dropped)"),
    doc_field("n_videos", pa.int64(), "videos among the matched units (the resampling unit)"),
    doc_field("baseline_mean", pa.float64(), "baseline's mean over videos of its per-video mean, matched units"),
    doc_field("variant_mean", pa.float64(), "variant's mean over videos of its per-video mean, matched units"),
    doc_field("mean_difference", pa.float64(), "variant − baseline: mean over videos of the per-video mean "
                                            "paired difference"),
    doc_field("ci_low", pa.float64(), "lower end of the CI of mean_difference (null: see ci_note)"),
    doc_field("ci_high", pa.float64(), "upper end of the CI of mean_difference (null: see ci_note)"),
    doc_field("ci_method", pa.string(), "how the CI was made (the mean differences that neither test of p rejects)"),
    doc_field("ci_note", pa.string(), "why the CI is null (e.g. 'n too small: 3 videos < 5'); null when given"),
    doc_field("confidence", pa.float64(), "CI level"),
    doc_field("n_boot", pa.int64(), "bootstrap resamples (and random sign patterns beyond 20 videos)"),
    doc_field("test", pa.string(), "the paired test of p"),
    doc_field("p", pa.float64(), "two-sided p of mean_difference = 0: the larger of p_sign_flip and p_bootstrap (the "
                                 "CI excludes 0 exactly when p < 1 − confidence)"),
    doc_field("p_sign_flip", pa.float64(), "exact sign-flip permutation p of the mean per-video difference (all 2^n "
                                           "sign patterns up to 20 videos, else n_boot random ones)"),
    doc_field("p_bootstrap", pa.float64(), "bootstrap-t p of the mean per-video difference (null: no spread)"),
    doc_field("p_wilcoxon", pa.float64(), "Wilcoxon signed-rank p of the per-video differences (tests a "
                                          "pseudo-median, not the mean: it may disagree with the CI)"),
    doc_field("min_p", pa.float64(), "the smallest p this number of videos allows: 2/2^n_videos, at least "
                                     "2/(n_boot + 1)"),
    doc_field("p_holm", pa.float64(), "p adjusted by Holm's step-down over every comparison of this metric in the sweep"),
    doc_field("family_size", pa.int64(), "comparisons in that Holm family"),
    doc_field("min_p_holm", pa.float64(), "the smallest p_holm this design allows (family_size × min_p, at most 1): "
                                          "at 0.05 or above no comparison can be marked *"),
    doc_field("code_version", pa.string(), "motion-sweep package version that wrote the row"),
    doc_field("created_at", _timestamp, "when the row was written (UTC)"),
])

EFFECTS_SCHEMA = pa.schema([
    doc_field("sweep", pa.string(), "sweep name"),
    doc_field("setting", pa.string(), "the hyperparameter setting of the variants fitted ('' without such axes)"),
    doc_field("subset", pa.string(), "the complete factorial fitted: 'MQK and MV' (MQK design × MV design × debias), "
                                     "'MV removed' (MQK design), 'MQK removed' (MV design × debias); or the removals"),
    doc_field("kind", pa.string(), "main | interaction | variance (a variance share) | removal (compare's paired row)"),
    doc_field("factor", pa.string(), "the factor or pair of factors of the term; the component of a variance row"),
    doc_field("term", pa.string(), "what is estimated, e.g. 'MQK design: 2d − 1d' (the paper's level subtracted, "
                                   "averaged over the other factors) or 'MQK design × debias: (2d − 1d) × "
                                   "(none − difference)' (a difference of differences)"),
    doc_field("metric", pa.string(), "metric (vocabulary.METRICS)"),
    doc_field("higher_is_better", pa.bool_(), "direction of the metric"),
    doc_field("checkpoint", pa.int64(), "checkpoint step of the samples fitted"),
    doc_field("estimate", pa.float64(), "mean over videos of the per-video mean contrast; a variance row: the "
                                        "component's share of the total variance (0–1)"),
    doc_field("ci_low", pa.float64(), "lower end of the CI of estimate (null: see ci_note)"),
    doc_field("ci_high", pa.float64(), "upper end of the CI of estimate (null: see ci_note)"),
    doc_field("ci_method", pa.string(), "how the CI was made (as comparisons': the values neither test of p rejects)"),
    doc_field("ci_note", pa.string(), "why the CI is null (e.g. 'n too small: 2 videos < 6')"),
    doc_field("confidence", pa.float64(), "CI level"),
    doc_field("n_boot", pa.int64(), "bootstrap resamples (and random sign patterns beyond 20 videos)"),
    doc_field("method", pa.string(), "the test of p (a variance row: the mixed model that estimated it)"),
    doc_field("p", pa.float64(), "two-sided p of estimate = 0 over the per-video contrasts, as comparisons test "
                                 "theirs (the larger of an exact sign-flip and a bootstrap-t p); removals: compare's"),
    doc_field("p_holm", pa.float64(), "p adjusted by Holm over every main/interaction row of the metric in the sweep "
                                      "(removals: compare's adjustment)"),
    doc_field("family_size", pa.int64(), "tests in that Holm family"),
    doc_field("n_videos", pa.int64(), "videos entering the term (the resampling unit)"),
    doc_field("n_units", pa.int64(), "units (video, prompt, generation seed) with every cell of the factorial"),
    doc_field("n_variants", pa.int64(), "variants entering the fit (a cell with several optimisation seeds holds "
                                        "several)"),
    doc_field("mixed_estimate", pa.float64(), "the linear mixed model's estimate of the same contrast"),
    doc_field("wald_low", pa.float64(), "lower end of the mixed model's Wald CI"),
    doc_field("wald_high", pa.float64(), "upper end of the mixed model's Wald CI"),
    doc_field("p_wald", pa.float64(), "the mixed model's Wald p (anti-conservative when the effect differs between "
                                      "videos: read p)"),
    doc_field("mixed_model", pa.string(), "the mixed model fitted (fixed effects, random parts)"),
    doc_field("variance", pa.float64(), "a variance row: the component's variance (REML)"),
    doc_field("note", pa.string(), "what to know about the fit: dropped units, warnings of the mixed model"),
    doc_field("preset", pa.string(), "model preset(s) of the samples fitted"),
    doc_field("pretrained_metrics", pa.bool_(), "false: some samples were scored with random-weight metric backbones "
                                                "(plumbing numbers)"),
    doc_field("code_version", pa.string(), "motion-sweep package version that wrote the row"),
    doc_field("created_at", _timestamp, "when the row was written (UTC)"),
])

#: Columns of the grid table that are not axes (the axes themselves hold requested values).
GRID_COLUMNS = {
    "sweep": "sweep name", "preset": "the point's base model preset (the spec's `preset:`, or the preset axis's value)", "video": "reference video id", "source_prompt": "text describing the reference",
    "prompt": "edit prompt", "checkpoint_step": "requested checkpoint step",
    applied("checkpoint_step"): "step of the sample that answers it (0: base model)",
    "variant": "canonical variant id that answers the point", "variant_key": "its content hash",
    "trial_id": "trial that computes it", "sample_key": "sample that answers it (join key with samples)",
}
AXIS_DOC = {"qk": "requested MQK design", "v": "requested MV design", "remove": "requested removed components",
            "debias": "requested MV debias", "seed": "requested seed"}
assert tuple(AXIS_DOC) == DESIGN_AXES

#: Tables written as parts (write_part), and comparisons (one file per sweep, write_comparisons).
SCHEMAS = {"samples": SAMPLES_SCHEMA, "inversions": INVERSIONS_SCHEMA, "references": REFERENCES_SCHEMA}
#: `<sweep>/search.parquet`: one row per search sample (Tune trial). Each searched setting is also a column
#: of its own, named as in the space (`inversion.lr`), holding the sampled value.
SEARCH_SCHEMA = pa.schema([
    doc_field("sweep", pa.string(), "sweep name"),
    doc_field("search", pa.string(), "the sample's Tune trial id (= the `search` column of its samples rows)"),
    doc_field("experiment", pa.string(), "Tune experiment (under <sweep>/tune/)"),
    doc_field("config", pa.string(), "JSON of the sampled values (the searched settings only)"),
    doc_field("status", pa.string(), "ok | error (the trial failed after its retries)"),
    doc_field("error", pa.string(), "why it failed"),
    doc_field("steps_max", pa.int64(), "the sample's inversion steps (how far it would run without early stopping)"),
    doc_field("steps_run", pa.int64(), "the last inversion step it reached"),
    doc_field("stopped_early", pa.bool_(), "the scheduler stopped it before steps_max"),
    doc_field("rungs", pa.list_(pa.int64()), "checkpoint steps at which its eval set was scored"),
    doc_field("objectives", pa.list_(pa.float64()), "objective at each of those steps (aligned with rungs)"),
    doc_field("best_step", pa.int64(), "its step with the best objective"),
    doc_field("best_objective", pa.float64(), "the objective there"),
    doc_field("is_best", pa.bool_(), "this sample holds the search's best (objective, step)"),
    doc_field("videos", pa.int64(), "videos it inverted (one optimisation each)"),
    doc_field("inversion_keys", pa.list_(pa.string()), "content keys of its embeddings (store/inversions/<key>)"),
    doc_field("seconds", pa.float64(), "wall time of the trial"),
    doc_field("code_version", pa.string(), "motion-sweep package version that wrote the row"),
    doc_field("created_at", pa.timestamp("us", tz="UTC"), "when the row was written (UTC)"),
])


ALL_SCHEMAS = {**SCHEMAS, "comparisons": COMPARISONS_SCHEMA, "effects": EFFECTS_SCHEMA, "search": SEARCH_SCHEMA}


def describe_tables() -> dict[str, dict[str, str]]:
    """{table: {column: what it holds}}: the one place where columns are documented."""
    out = {name: {f.name: f.metadata[b"doc"].decode() for f in schema} for name, schema in ALL_SCHEMAS.items()}
    out["samples"]["<axis>_applied"] = "a swept inversion./generation. hyperparameter: the value that ran"
    out["grid"] = {**{a: doc for a, doc in AXIS_DOC.items()}, "<axis>": "a swept hyperparameter: requested value",
                   **GRID_COLUMNS}
    out["points"] = {"(grid columns)": "the requested point", "(samples columns)": "the sample that answers it"}
    return out
