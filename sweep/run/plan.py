"""Planning: expand a spec's grid, collapse it to canonical variants, group the work by stage.

    grid point        requested axis values × video × prompt      (what the user asked for)
    canonical variant what actually differs once meaningless settings are dropped:
                      remove=qk -> qk="off"; remove=v -> v="off" and debias="off"; remove=both -> the base
                      model: nothing optimised, checkpoint 0, optimisation hyperparameters irrelevant
    stages            one DDIM inversion per ddim_key (video × frames × size × ddim steps × base model; the base
                      model is the spec's `preset:` or, swept, the point's `preset` axis value)
                      one embedding optimisation (= one Tune trial) per inversion_key
                      one generation per generation_key, one scored sample per sample_key

Keys are content hashes (sha256 of canonical JSON, first 16 hex) of exactly what produced a thing, so
results are shared across sweeps through the store. Steps/checkpoints are *not* in the inversion key:
with a constant learning rate, step k of a longer run is the same embedding.

Pure Python (+ pyarrow for the grid table); never imports torch or ray (of `model` only its torch-free configs,
which trials and generations turn their settings into). The one input it reads is each
video's content hash (`sweep.run.videos`), computed before planning unless given.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from model.config import GenerationConfig, InversionConfig
from vocabulary import DESIGN_AXES, NON_VARIANT_AXES, OFF, PRESET_AXIS, PRESETS, applied

from ..results.store import Store
from ..spec import DDIM_SETTINGS, OPTIMISATION_ONLY, Spec
from .videos import fingerprints_of

KEY_VERSION = 1  # bump to invalidate every cached artefact when what a key means changes
BASE_VARIANT = f"qk={OFF} v={OFF}"  # the plain base model's variant id (variant_of builds ids this way)


def content_key(obj: Any) -> str:
    """sha256 of canonical JSON (sorted keys, no spaces), first 16 hex chars."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class SweepContext:
    """What a trial needs besides its plan entry: where rows go, the base model, the scorer's settings, how often it
    saves a resume point."""

    name: str  # the sweep (its folder under the storage root)
    storage: str  # the storage root's URI
    preset: str  # the spec's `preset:` (with a preset axis, each trial names its own)
    models: dict  # {preset: the spec's `model:` for it (another copy of its weights), or None}
    metrics: dict  # the spec's `metrics:` block (evaluation.ScorerConfig.from_names and its settings)
    fps: int  # frame rate of the written clips
    checkpoint_every: int  # steps between a trial's resume points (spec `tune:`) ...
    checkpoint_min_seconds: float  # ... at least this far apart

    @classmethod
    def of(cls, spec: Spec) -> "SweepContext":
        return cls(name=spec.name, storage=spec.storage, preset=spec.preset,
                   models={p: spec.model_for(p) for p in spec.presets}, metrics=spec.metrics.model_dump(),
                   fps=spec.generation.fps,
                   checkpoint_every=spec.tune.checkpoint_every,
                   checkpoint_min_seconds=spec.tune.checkpoint_min_seconds)


# --------------------------------------------------------------------------------------------------
# Plan objects. Plain dataclasses: picklable for Ray, `to_dict()` for plan.json.

@dataclass
class DDIMInversion:
    ddim_key: str
    video: str  # video id
    video_path: str
    fingerprint: str  # sha256 of the video's bytes (or its frame files)
    preset: str
    base_model: str
    config: dict  # frames, start, stride, height, width, ddim_steps


@dataclass
class Generation:
    """One generated clip and its scored row."""

    sample_key: str
    generation_key: str
    variant: str
    variant_key: str
    checkpoint: int  # 0 for the base model
    debias: str  # OFF when there is no MV
    prompt: str
    seed: int  # generation seed
    params: dict  # generation hyperparameters (canonical; noise_prior None for random init)
    columns: dict  # everything the samples row needs besides metrics, status and timings

    def generation_config(self) -> GenerationConfig:
        """The model's settings of this generation."""
        return GenerationConfig(**self.params)


@dataclass
class Trial:
    """One Tune trial: one inversion (or the base model) and every generation that uses it."""

    trial_id: str  # = inversion_key
    inversion_key: str
    ddim_key: str
    base: bool  # both embeddings removed: nothing to optimise
    video: str
    video_path: str
    source_prompt: str
    qk: str  # "1d" | "2d" | "off"
    v: str
    seed: Optional[int]  # optimisation seed (None for the base model)
    inversion: dict  # every inversion hyperparameter; steps = run length, checkpoints = steps to save
    checkpoints: list[int]  # steps whose embeddings the generations need ([] for the base model)
    generations: list[Generation] = field(default_factory=list)
    columns: dict = field(default_factory=dict)  # the inversions row (besides loss curve, timings)
    preset: str = ""  # the base model's preset (the spec's, or the point's value of the preset axis)
    base_model: str = ""  # its weights (hub id or local dir), what the embeddings' files record

    def to_dict(self) -> dict:
        return asdict(self)

    def inversion_config(self) -> InversionConfig:
        """The model's settings of this trial's optimisation (saving the checkpoints its generations need); not for
        the base model, which optimises nothing."""
        inv = self.inversion
        return InversionConfig(qk=self.qk, v=self.v, placement=tuple(inv["placement"]), slots=inv["slots"],
                               steps=int(inv["steps"]), lr=inv["lr"], weight_decay=inv["weight_decay"],
                               loss=inv["loss"], checkpoints=tuple(sorted(set(self.checkpoints))), seed=self.seed or 0)


@dataclass
class GridPoint:
    """A requested point: axis values × video × prompt, answered by one sample per checkpoint."""

    axes: dict  # requested values: qk, v, remove, debias, seed, inversion.*/generation.* axes
    video: str
    source_prompt: str
    prompt: str
    variant: str
    variant_key: str
    trial_id: str
    checkpoints: list[int]  # requested checkpoint steps
    sample_keys: list[str]  # aligned with checkpoints (the base model maps all of them to one sample)
    canonical_checkpoints: list[int]


@dataclass
class Plan:
    spec: Spec
    grid_points: list[GridPoint]
    trials: list[Trial]
    ddim_inversions: list[DDIMInversion]
    variants: dict[str, dict]  # variant id -> canonical values
    axis_names: list[str]  # swept axes, in column order
    hyper_columns: list[str]  # inversion.*/generation.* axis columns written in rows

    @property
    def name(self) -> str:
        return self.spec.name

    def generations(self) -> list[Generation]:
        return [g for t in self.trials for g in t.generations]

    def to_dict(self) -> dict:
        return {
            "sweep": self.spec.name,
            "key_version": KEY_VERSION,
            "spec": self.spec.model_dump(mode="json"),
            "summary": plan_summary(self),
            "axis_names": self.axis_names,
            "variants": self.variants,
            "ddim_inversions": [asdict(d) for d in self.ddim_inversions],
            "trials": [t.to_dict() for t in self.trials],
            "grid_points": [asdict(g) for g in self.grid_points],
        }

    def grid_table(self):
        """One row per requested grid point × checkpoint: requested axis values -> variant, sample_key.

        Join it to the samples table on (sweep, sample_key) to answer any requested point
        (`sweep.results.tables.load(path, table="points")` does that).
        """
        import pyarrow as pa

        rows = []
        for gp in self.grid_points:
            for cp, ccp, key in zip(gp.checkpoints, gp.canonical_checkpoints, gp.sample_keys):
                rows.append({"sweep": self.spec.name, PRESET_AXIS: self.spec.preset, **gp.axes, "video": gp.video,
                             "source_prompt": gp.source_prompt, "prompt": gp.prompt, "checkpoint_step": cp,
                             "variant": gp.variant, "variant_key": gp.variant_key, "trial_id": gp.trial_id,
                             "sample_key": key, applied("checkpoint_step"): ccp})
        names = ["sweep", *DESIGN_AXES, PRESET_AXIS, *self.hyper_columns, "video", "source_prompt", "prompt", "checkpoint_step",
                 applied("checkpoint_step"), "variant", "variant_key", "trial_id", "sample_key"]
        return pa.Table.from_pydict({n: [r.get(n) for r in rows] for n in names})


# --------------------------------------------------------------------------------------------------
# Canonicalisation.

def canonical_point(spec: Spec, axes: dict) -> dict:
    """The canonical values of one requested point (without video/prompt).

    Returns qk, v, remove, debias, base, seed (inversion seed or None), generation_seed,
    inversion (full resolved dict; optimisation-only settings None for the base model),
    generation (full resolved dict), hyper (canonical value per swept hyper axis; None = irrelevant).
    """
    remove = axes["remove"]
    qk = OFF if remove in ("qk", "both") else axes["qk"]
    v = OFF if remove in ("v", "both") else axes["v"]
    base = qk == OFF and v == OFF
    debias = OFF if v == OFF else axes["debias"]

    inversion = spec.inversion.model_dump()
    generation = spec.generation.model_dump()
    for name, value in axes.items():
        stage, dot, setting = name.partition(".")
        if dot:
            (inversion if stage == "inversion" else generation)[setting] = value
    preset_name = axes.get(PRESET_AXIS, spec.preset)
    preset = PRESETS[preset_name]
    for name, default in (("frames", preset.num_frames), ("height", preset.height), ("width", preset.width)):
        if inversion[name] is None:  # an axis value of null means the preset's default
            inversion[name] = default
    generation.pop("fps")  # the written file's frame rate: a sweep setting, not part of what is generated
    gen_seed_override = generation.pop("seed")
    generation_seed = axes["seed"] if gen_seed_override is None else gen_seed_override
    if generation["noise_init"] == "random":
        generation["noise_prior"] = None  # the prior only weights the inverted noise in blend init
    requested_steps = inversion["steps"]
    inversion["checkpoints"] = spec.checkpoints_for(requested_steps)
    if base:
        for name in OPTIMISATION_ONLY:
            inversion[name] = None
    seed: Optional[int] = None if base else axes["seed"]

    hyper = {}
    for name in axes:
        stage, dot, setting = name.partition(".")
        if name == PRESET_AXIS:
            hyper[name] = preset_name
        if not dot:
            continue
        if stage == "inversion":
            # steps do not identify a sample (step k of any run >= k is the same): see checkpoint_step
            hyper[name] = None if setting == "steps" else inversion[setting]
        elif setting == "seed":
            hyper[name] = generation_seed
        else:
            hyper[name] = generation[setting]
    return {"qk": qk, "v": v, "remove": removed(qk, v), "debias": debias, "base": base, "seed": seed,
            "preset": preset_name, "base_model": spec.base_model_for(preset_name),
            "generation_seed": generation_seed, "inversion": inversion, "generation": generation,
            "hyper": hyper, "requested_steps": requested_steps}


def removed(qk: str, v: str) -> str:
    """The `remove` value (vocabulary.REMOVE) of a variant with these applied designs."""
    return {(True, True): "both", (True, False): "qk", (False, True): "v"}.get((qk == OFF, v == OFF), "none")


def variant_of(canon: dict, swept: list[str]) -> tuple[str, str, dict]:
    """(readable id, key, canonical values). The id names the designs, debias, and swept hyperparameters
    that matter; the key hashes the full canonical configuration (unique across sweeps too)."""
    parts = [f"qk={canon['qk']}", f"v={canon['v']}"]
    if canon["v"] != OFF:
        parts.append(f"debias={canon['debias']}")
    values: dict[str, Any] = {"qk": canon["qk"], "v": canon["v"], "debias": canon["debias"]}
    for name in swept:
        if name in NON_VARIANT_AXES:
            continue
        value = canon["hyper"].get(name)
        if value is None:
            continue
        values[name] = value
        parts.append(f"{name}={_fmt(value)}")
    inversion = {k: v for k, v in canon["inversion"].items() if k not in ("steps", "checkpoints")}
    key = content_key({"kind": "variant", "v": KEY_VERSION, "qk": canon["qk"], "mv": canon["v"],
                       "debias": canon["debias"], "inversion": inversion, "generation": canon["generation"],
                       "preset": canon["preset"], "model": canon["base_model"]})
    return " ".join(parts), key, values


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return format(value, "g")
    return str(value) if value != "" else '""'


# --------------------------------------------------------------------------------------------------
# The planner.

def make_plan(spec: Spec, fingerprints: Optional[dict[str, str]] = None) -> Plan:
    """Expand `spec` into grid points, trials (one per inversion key) and DDIM inversions.

    fingerprints: {video path: sha256} (`sweep.run.videos.fingerprints_of(spec)`, computed once on the driver);
    when not given they are computed here (the videos are read to hash them, unless an item carries `sha256:`).
    """
    fingerprints = fingerprints_of(spec, fingerprints)

    axis_values = spec.axis_values()
    axis_names = list(axis_values)
    hyper_columns = [n for n in axis_names if "." in n]
    swept = [n for n in axis_names if n == PRESET_AXIS] + hyper_columns
    metrics = spec.metrics.model_dump()

    ddims: dict[str, DDIMInversion] = {}
    trials: dict[str, Trial] = {}
    samples: dict[str, Generation] = {}
    variants: dict[str, dict] = {}
    grid: list[GridPoint] = []

    for combo in itertools.product(*axis_values.values()):
        axes = dict(zip(axis_names, combo))
        canon = canonical_point(spec, axes)
        variant, variant_key, variant_values = variant_of(canon, swept)
        variants.setdefault(variant, variant_values)
        inv = canon["inversion"]
        for item in spec.data:
            fingerprint = fingerprints[item.video]
            ddim_cfg = {k: inv[k] for k in DDIM_SETTINGS}
            ddim_key = content_key({"kind": "ddim", "v": KEY_VERSION, "preset": canon["preset"],
                                    "model": canon["base_model"], "video": fingerprint, **ddim_cfg})
            if ddim_key not in ddims:
                ddims[ddim_key] = DDIMInversion(ddim_key, item.id, item.video, fingerprint, canon["preset"],
                                                canon["base_model"], ddim_cfg)
            if canon["base"]:
                inversion_key = content_key({"kind": "inversion", "v": KEY_VERSION, "ddim": ddim_key,
                                             "base": True})
            else:
                inversion_key = content_key({
                    "kind": "inversion", "v": KEY_VERSION, "ddim": ddim_key, "qk": canon["qk"], "mv": canon["v"],
                    "placement": inv["placement"], "slots": inv["slots"], "lr": inv["lr"],
                    "weight_decay": inv["weight_decay"], "loss": inv["loss"], "seed": canon["seed"],
                    "source_prompt": item.source_prompt})
            trial = trials.get(inversion_key)
            if trial is None:
                trial = trials[inversion_key] = _new_trial(spec, item, canon, inversion_key, ddim_key)
            needed = [0] if canon["base"] else inv["checkpoints"]
            if not canon["base"]:
                trial.inversion["steps"] = max(trial.inversion["steps"], canon["requested_steps"])
                trial.checkpoints = sorted(set(trial.checkpoints) | set(needed))
                trial.inversion["checkpoints"] = sorted(set(trial.checkpoints) | {trial.inversion["steps"]})
            for prompt in item.prompts:
                keys = []
                for checkpoint in needed:
                    generation_key = content_key({
                        "kind": "generation", "v": KEY_VERSION, "inversion": inversion_key,
                        "checkpoint": checkpoint, "debias": canon["debias"], "prompt": prompt,
                        "params": canon["generation"], "seed": canon["generation_seed"]})
                    sample_key = content_key({"kind": "sample", "v": KEY_VERSION, "generation": generation_key,
                                              "metrics": metrics, "source_prompt": item.source_prompt})
                    keys.append(sample_key)
                    if sample_key not in samples:
                        gen = _new_generation(spec, item, canon, trial, variant, variant_key, hyper_columns,
                                              checkpoint, prompt, generation_key, sample_key)
                        samples[sample_key] = gen
                        trial.generations.append(gen)
                requested = spec.checkpoints_for(canon["requested_steps"])
                grid.append(GridPoint(
                    axes=axes, video=item.id, source_prompt=item.source_prompt, prompt=prompt, variant=variant,
                    variant_key=variant_key, trial_id=inversion_key, checkpoints=list(requested),
                    sample_keys=[keys[0]] * len(requested) if canon["base"] else keys,
                    canonical_checkpoints=[0] * len(requested) if canon["base"] else list(needed)))

    for trial in trials.values():
        trial.generations.sort(key=lambda g: g.checkpoint)  # stable: load each checkpoint's embeddings once
        trial.columns["steps"] = trial.inversion["steps"]
        trial.columns["checkpoints"] = list(trial.inversion["checkpoints"])
    return Plan(spec=spec, grid_points=grid, trials=list(trials.values()), ddim_inversions=list(ddims.values()),
                variants=variants, axis_names=axis_names, hyper_columns=hyper_columns)


def _new_trial(spec: Spec, item, canon: dict, inversion_key: str, ddim_key: str) -> Trial:
    inv = dict(canon["inversion"])
    if canon["base"]:
        inv["steps"], inv["checkpoints"] = 0, []
    else:
        inv["steps"], inv["checkpoints"] = canon["requested_steps"], []
    config = {k: v for k, v in inv.items() if k not in ("steps", "checkpoints")}
    columns = {"sweep": spec.name, "trial_id": inversion_key, "inversion_key": inversion_key, "ddim_key": ddim_key,
               "video": item.id, "source_video": item.video, "source_prompt": item.source_prompt,
               applied("qk"): canon["qk"], applied("v"): canon["v"], "preset": canon["preset"],
               "base_model": canon["base_model"], applied("seed"): canon["seed"],
               "config": json.dumps(config, sort_keys=True)}
    return Trial(trial_id=inversion_key, inversion_key=inversion_key, ddim_key=ddim_key, base=canon["base"],
                 video=item.id, video_path=item.video, source_prompt=item.source_prompt, qk=canon["qk"],
                 v=canon["v"], seed=canon["seed"], inversion=inv, checkpoints=[], columns=columns,
                 preset=canon["preset"], base_model=canon["base_model"])


def _new_generation(spec: Spec, item, canon: dict, trial: Trial, variant: str, variant_key: str,
                    hyper_columns: list[str], checkpoint: int, prompt: str, generation_key: str,
                    sample_key: str) -> Generation:
    config = {"inversion": {k: v for k, v in canon["inversion"].items() if k not in ("steps", "checkpoints")},
              "generation": canon["generation"]}
    columns = {
        "sweep": spec.name, "trial_id": trial.trial_id, "sample_key": sample_key, "generation_key": generation_key,
        "inversion_key": trial.inversion_key, "ddim_key": trial.ddim_key, "variant": variant,
        "variant_key": variant_key, applied("qk"): canon["qk"], applied("v"): canon["v"],
        applied("remove"): canon["remove"], applied("debias"): canon["debias"], applied("seed"): canon["seed"],
        "generation_seed": canon["generation_seed"], applied("checkpoint_step"): checkpoint, "video": item.id, "source_video": item.video,
        "source_prompt": item.source_prompt, "prompt": prompt, "preset": canon["preset"],
        "base_model": canon["base_model"], "config": json.dumps(config, sort_keys=True),
        "clip_backbone": spec.metrics.clip, "tracker": spec.metrics.tracker, "fid_backbone": spec.metrics.fid,
        **{applied(name): canon["hyper"].get(name) for name in hyper_columns},
    }
    return Generation(sample_key=sample_key, generation_key=generation_key, variant=variant, variant_key=variant_key,
                      checkpoint=checkpoint, debias=canon["debias"], prompt=prompt, seed=canon["generation_seed"],
                      params=dict(canon["generation"]), columns=columns)


# --------------------------------------------------------------------------------------------------
# Counting: what the plan runs, what a naive sweep would run, what the store already has.

def naive_work(plan: Plan) -> dict:
    """What one Tune trial per grid point would run: each point inverts its video, optimises its own
    embeddings (unless it is the base model) and generates once per requested checkpoint."""
    spec = plan.spec
    ddim = opt = gens = ddim_steps = opt_steps = denoise = 0
    for gp in plan.grid_points:
        canon = canonical_point(spec, gp.axes)
        requested_base = gp.axes["remove"] == "both"
        inv = {**spec.inversion.model_dump(), **{k.split(".", 1)[1]: v for k, v in gp.axes.items()
                                                  if k.startswith("inversion.")}}
        gen_steps = gp.axes.get("generation.steps", spec.generation.steps)
        n_gen = 1 if requested_base else len(gp.checkpoints)
        ddim += 1
        ddim_steps += inv["ddim_steps"]
        if not requested_base:
            opt += 1
            opt_steps += canon["requested_steps"]
        gens += n_gen
        denoise += n_gen * gen_steps
    return {"ddim_inversions": ddim, "inversions": opt, "generations": gens,
            "ddim_steps": ddim_steps, "optimisation_steps": opt_steps, "denoising_steps": denoise}


def planned_work(plan: Plan) -> dict:
    """What the plan runs (before looking at the store)."""
    opt = [t for t in plan.trials if not t.base]
    gens = plan.generations()
    unique_gens = {g.generation_key: g for g in gens}  # two samples may share a clip (base model, 2 sources)
    return {"ddim_inversions": len(plan.ddim_inversions), "inversions": len(opt), "generations": len(unique_gens),
            "ddim_steps": sum(d.config["ddim_steps"] for d in plan.ddim_inversions),
            "optimisation_steps": sum(t.inversion["steps"] for t in opt),
            "denoising_steps": sum(g.params["steps"] for g in unique_gens.values())}


def plan_summary(plan: Plan, store: Optional[Store] = None) -> dict:
    """Counts for `motion-sweep plan` (--json prints this dict).

    grid_points / canonical_variants are counted per video × prompt pair and summed over pairs;
    inversions are embedding optimisations (the base model has none); trials includes base-model trials.
    """
    pairs = {(gp.video, gp.source_prompt, gp.prompt) for gp in plan.grid_points}
    canonical = {(gp.variant_key, gp.video, gp.source_prompt, gp.prompt) for gp in plan.grid_points}
    planned = planned_work(plan)
    naive = naive_work(plan)
    summary: dict[str, Any] = {
        "sweep": plan.spec.name,
        "presets": plan.spec.presets,
        "grid_points": len(plan.grid_points),
        "canonical_variants": len(canonical),
        "inversions": planned["inversions"],
        "generations": planned["generations"],
        "naive_inversions": naive["inversions"],
        "naive_generations": naive["generations"],
        "cached_inversions": None,
        "cached_generations": None,
        "ddim_inversions": planned["ddim_inversions"],
        "naive_ddim_inversions": naive["ddim_inversions"],
        "trials": len(plan.trials),
        "samples": len(plan.generations()),
        "variants": len(plan.variants),
        "videos": len({d.video for d in plan.ddim_inversions}),
        "video_prompt_pairs": len(pairs),
        "axis_points": len(plan.grid_points) // max(len(pairs), 1),
        "work": {"planned": planned, "naive": naive},
    }
    if store is not None:
        opt = [t for t in plan.trials if not t.base]
        summary["cached_inversions"] = sum(store.has_inversion(t.inversion_key, t.checkpoints) for t in opt)
        summary["cached_generations"] = sum(store.has_sample(g.sample_key) for g in plan.generations())
        summary["cached_ddim_inversions"] = sum(store.has_ddim(d.ddim_key) for d in plan.ddim_inversions)
    return summary


def format_summary(summary: dict) -> str:
    """The text `motion-sweep plan` prints."""
    def cached(key: str) -> str:
        return "" if summary.get(key) is None else f"   ({summary[key]} already in the store)"

    planned, naive = summary["work"]["planned"], summary["work"]["naive"]
    lines = [
        f"sweep {summary['sweep']} ({', '.join(summary['presets'])}): {summary['videos']} videos, "
        f"{summary['video_prompt_pairs']} video×prompt pairs",
        f"  grid points          {summary['grid_points']:>8}   ({summary['axis_points']} per pair)",
        f"  canonical variants   {summary['canonical_variants']:>8}   ({summary['variants']} distinct variants)",
        f"  DDIM inversions      {summary['ddim_inversions']:>8}   naive {summary['naive_ddim_inversions']}"
        + cached("cached_ddim_inversions"),
        f"  inversions (trials)  {summary['inversions']:>8}   naive {summary['naive_inversions']}"
        f"   [{summary['trials']} Tune trials]" + cached("cached_inversions"),
        f"  generations          {summary['generations']:>8}   naive {summary['naive_generations']}"
        + cached("cached_generations"),
        "  GPU work (steps)       planned      naive",
    ]
    for key, label in (("ddim_steps", "DDIM inversion"), ("optimisation_steps", "optimisation"),
                       ("denoising_steps", "denoising")):
        lines.append(f"    {label:<18} {planned[key]:>10} {naive[key]:>10}")
    return "\n".join(lines)


def save_plan(store: Store, plan: Plan) -> None:
    """Write `<sweep>/plan.json` and `<sweep>/grid.parquet` (atomically) so the grid can be joined later."""
    store.write_json(store.plan_path(plan.name), plan.to_dict())
    store.write_parquet(store.grid_path(plan.name), plan.grid_table())
