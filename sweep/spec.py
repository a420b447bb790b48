"""The sweep spec: one YAML file that says which videos, prompts and axes to run.

Validated with pydantic before any Ray work. Every problem is collected into one `SpecError` whose
message lists each (field path + what is accepted), so a user fixes a spec in one round trip.

    spec = load_spec("paper.yaml")                      # relative paths resolve against the file's folder
    spec = Spec.model_validate(raw_dict)                # relative paths resolve against the cwd
    spec = Spec.model_validate(raw, context={"base_dir": "/data", "check_files": False})

Pure Python + pydantic + pyyaml: importing this module must never pull in torch or ray (the settings' defaults come
from `model.config` and `evaluation.config`, which are torch-free).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union, get_args, get_origin

import yaml
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, create_model,
                      field_validator, model_validator)

from evaluation.config import ScorerConfig
from model.config import DEFAULT_PLACEMENT, DEFAULT_SLOTS, GenerationConfig, InversionConfig, ReferenceConfig
from videoio import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from vocabulary import (DEBIAS_MODES, DESIGN_AXES, LOSSES, METRICS, NOISE_INITS, PAPER_CHECKPOINT, PAPER_METHOD,
                        PRESET_AXIS, PRESETS, QK_DESIGNS, REMOVE, SAMPLE_METRICS, TRACKERS, V_DESIGNS)

# --------------------------------------------------------------------------------------------------
# Accepted values.

STORAGE_SCHEMES = ("file", "s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")
RESERVED_NAMES = ("store",)  # top-level folders of the storage root that are not sweeps

#: Inversion settings that only matter when something is optimised (irrelevant for the base model).
OPTIMISATION_ONLY = ("steps", "lr", "weight_decay", "loss", "slots", "placement", "checkpoints")
#: Inversion settings that feed the (shared) DDIM inversion of the reference video: model.ReferenceConfig's.
DDIM_SETTINGS = tuple(f.name for f in dataclasses.fields(ReferenceConfig))
#: List-valued settings: they cannot be axes (an axis value must be a scalar).
LIST_SETTINGS = ("checkpoints", "placement")
#: Scalar settings that are not axes because they change no generated frame and no metric.
NOT_AXES = ("fps",)


class SpecError(ValueError):
    """A spec that cannot be run. `.problems` lists every problem found, one string each."""

    def __init__(self, problems: list[str], source: str | os.PathLike | None = None):
        self.problems = list(problems)
        self.source = str(source) if source is not None else None
        where = f" {self.source}" if self.source else ""
        n = len(self.problems)
        head = f"invalid sweep spec{where}: {n} problem{'s' if n != 1 else ''}"
        super().__init__(head + "".join(f"\n  - {p}" for p in self.problems))


# --------------------------------------------------------------------------------------------------
# Small types.

def _no_duplicates(values: list) -> list:
    seen = []
    for v in values:
        if v in seen:
            raise ValueError(f"duplicate value {v!r} (each value once)")
        seen.append(v)
    return values


PosInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
PosFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]
Text = Annotated[str, Field(min_length=1)]


def _multiple_of_8(v: Optional[int]) -> Optional[int]:
    if v is not None and v % 8:
        raise ValueError(f"{v} is not a multiple of 8 (the VAE downsamples by 8)")
    return v


Size = Annotated[Optional[PosInt], AfterValidator(_multiple_of_8)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=False)


# --------------------------------------------------------------------------------------------------
# Blocks.

class InversionBlock(_Strict):
    """`inversion:`: how the reference is prepared (`model.ReferenceConfig`) and the embeddings optimised
    (`model.InversionConfig`), with their names and defaults; here with the bounds a spec must respect.
    frames/height/width None = the preset's, filled in on validation."""

    frames: Optional[PosInt] = ReferenceConfig.frames
    start: NonNegInt = ReferenceConfig.start
    stride: PosInt = ReferenceConfig.stride
    steps: PosInt = InversionConfig.steps
    lr: PosFloat = InversionConfig.lr
    weight_decay: NonNegFloat = InversionConfig.weight_decay
    loss: Literal[LOSSES] = InversionConfig.loss  # type: ignore[valid-type]
    checkpoints: Optional[list[PosInt]] = None  # steps whose embeddings are evaluated; default [250, steps]
    placement: list[Text] = Field(default_factory=lambda: list(DEFAULT_PLACEMENT), min_length=1)
    slots: PosInt = DEFAULT_SLOTS
    ddim_steps: PosInt = ReferenceConfig.ddim_steps
    height: Size = ReferenceConfig.height
    width: Size = ReferenceConfig.width

    @field_validator("checkpoints")
    @classmethod
    def _sorted_checkpoints(cls, v: Optional[list[int]]) -> Optional[list[int]]:
        return sorted(set(v)) if v else v

    @field_validator("placement")
    @classmethod
    def _block_prefixes(cls, v: list[str]) -> list[str]:
        bad = [p for p in v if not p.split(".")[0] in ("down_blocks", "up_blocks", "mid_block")]
        if bad:
            raise ValueError(f"{bad} are not UNet block prefixes (accepted: down_blocks.N, up_blocks.N, mid_block)")
        return _no_duplicates(v)


class GenerationBlock(_Strict):
    """`generation:`: `model.GenerationConfig`'s names and defaults, plus the written file's frame rate and an
    optional fixed noise seed."""

    steps: PosInt = GenerationConfig.steps
    guidance: NonNegFloat = GenerationConfig.guidance
    noise_init: Literal[NOISE_INITS] = GenerationConfig.noise_init  # type: ignore[valid-type]
    noise_prior: Annotated[float, Field(ge=0.0, le=1.0)] = GenerationConfig.noise_prior
    negative_prompt: str = GenerationConfig.negative_prompt
    fps: Optional[PosInt] = None  # frame rate of the written mp4 (preset default, 8); not an axis
    seed: Optional[NonNegInt] = None  # None: the `seed` axis seeds generation too


class MetricsBlock(_Strict):
    """`metrics:`: the scorer's backbones by name (`evaluation.ScorerConfig.from_names`) and its settings, with
    ScorerConfig's defaults; clip/tracker None = the preset's."""

    clip: Optional[Text] = None  # "model" or "model/pretrained_tag"; None = the preset's backbone
    tracker: Optional[Literal[TRACKERS]] = None  # type: ignore[valid-type]  # None: the preset's
    fid: Text = ScorerConfig.fid_features
    grid_size: Optional[PosInt] = None  # None: the scorer's (DMT: 55)
    min_motion: NonNegFloat = ScorerConfig.min_motion
    fid_frames: NonNegInt = ScorerConfig.fid_frames  # FID/KID features kept per clip (evenly spaced); 0: every frame


class Resources(_Strict):
    gpu: NonNegFloat = 0.0  # per trial; fractional allowed
    cpu: PosFloat = 1.0


def _axis_list(item: Any) -> Any:
    return Annotated[list[item], Field(min_length=1), AfterValidator(_no_duplicates)]


def _axis_model(name: str, config: type[BaseModel]) -> type[BaseModel]:
    """An axes group with one optional list per scalar setting of `config`, same types and bounds."""
    fields: dict[str, Any] = {}
    for fname, info in config.model_fields.items():
        if fname in LIST_SETTINGS or fname in NOT_AXES:
            continue
        item = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
        fields[fname] = (Optional[_axis_list(item)], None)
    return create_model(name, __base__=_Strict, **fields)


InversionAxes = _axis_model("InversionAxes", InversionBlock)
GenerationAxes = _axis_model("GenerationAxes", GenerationBlock)


class Axes(_Strict):
    """The grid. Every key is a list; `inversion.<name>` / `generation.<name>` sweep a hyperparameter."""

    qk: _axis_list(Literal[QK_DESIGNS]) = [PAPER_METHOD["qk"]]  # type: ignore[valid-type]
    v: _axis_list(Literal[V_DESIGNS]) = [PAPER_METHOD["v"]]  # type: ignore[valid-type]
    remove: _axis_list(Literal[REMOVE]) = ["none"]  # type: ignore[valid-type]
    debias: _axis_list(Literal[DEBIAS_MODES]) = [PAPER_METHOD["debias"]]  # type: ignore[valid-type]
    seed: _axis_list(NonNegInt) = [0]  # type: ignore[valid-type]
    # The base model as an axis: the same ablation repeated on each preset, each with its own frames, size and
    # weights (a spec value still wins). None: the spec's `preset:` only, and no `preset` axis in the tables.
    preset: Optional[_axis_list(Literal[tuple(PRESETS)])] = None  # type: ignore[valid-type]
    inversion: InversionAxes = Field(default_factory=InversionAxes)  # type: ignore[valid-type]
    generation: GenerationAxes = Field(default_factory=GenerationAxes)  # type: ignore[valid-type]

    @model_validator(mode="before")
    @classmethod
    def _split_dotted(cls, data: Any) -> Any:
        """`inversion.lr: [...]` (how users write it) -> `inversion: {lr: [...]}` (how it is validated)."""
        if not isinstance(data, dict):
            return data
        out: dict[str, Any] = {}
        nested: dict[str, dict[str, Any]] = {"inversion": {}, "generation": {}}
        for key, value in data.items():
            stage, dot, name = str(key).partition(".")
            if dot and stage in nested:
                nested[stage][name] = value
            else:
                out[key] = value
        for stage, values in nested.items():
            if values:
                current = out.get(stage)
                out[stage] = {**current, **values} if isinstance(current, dict) else values
        return out

    def hyper(self) -> dict[str, list]:
        """Swept hyperparameters as {"inversion.lr": [...], ...}, in declaration order."""
        out: dict[str, list] = {}
        for stage in ("inversion", "generation"):
            for name, values in getattr(self, stage).model_dump(exclude_none=True).items():
                out[f"{stage}.{name}"] = list(values)
        return out

    def values(self) -> dict[str, list]:
        """Every axis (design axes first, then the preset when swept, then hyperparameter axes) with its values."""
        return {"qk": list(self.qk), "v": list(self.v), "remove": list(self.remove),
                "debias": list(self.debias), "seed": list(self.seed),
                **({PRESET_AXIS: list(self.preset)} if self.preset else {}), **self.hyper()}


class DataItem(_Strict):
    """One reference video, the prompt describing it, and the edit prompts to generate for it."""

    video: Text  # file (mp4/gif/webm/...) or folder of frames; local path or URI
    source_prompt: Text
    prompts: Annotated[list[Text], Field(min_length=1), AfterValidator(_no_duplicates)]
    id: Optional[Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]] = None  # default: file stem
    sha256: Optional[Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]] = None  # precomputed content hash

    @field_validator("video")
    @classmethod
    def _resolve_and_check(cls, v: str, info: ValidationInfo) -> str:
        ctx = info.context or {}
        if "://" in v:
            return v  # remote videos are checked by the planner when it hashes them
        path = Path(v).expanduser()
        if not path.is_absolute():
            path = Path(ctx.get("data_base_dir") or ctx.get("base_dir") or os.getcwd()) / path
        path = Path(os.path.normpath(path))
        if ctx.get("check_files", True):
            problem = video_problem(path)
            if problem:
                raise ValueError(f"{problem} (given as {v!r})")
        return str(path)


def video_problem(path: Path) -> Optional[str]:
    """Why `path` cannot be a reference video, or None if it looks usable."""
    if not path.exists():
        return f"video not found: {path}"
    if path.is_dir():
        if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir()):
            return f"folder {path} holds no frames ({', '.join(IMAGE_SUFFIXES)})"
        return None
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        return f"{path} is not a video file (accepted: {', '.join(VIDEO_SUFFIXES)} or a folder of frames)"
    return None


# --------------------------------------------------------------------------------------------------
# How the sweep runs on Tune: checkpoints, the declared metric, tracking, and the search.

MODES = ("max", "min")
SEARCH_ALGORITHMS = ("random", "optuna")
#: How a searched setting is drawn: a list (or {choice: [...]}) of values, or a range.
SPACE_KINDS = ("choice", "loguniform", "uniform", "randint")


def _per_sample_metric(metric: str) -> str:
    if metric not in SAMPLE_METRICS:
        raise ValueError(f"{metric!r} is not a per-sample metric; accepted: {', '.join(SAMPLE_METRICS)}")
    return metric


def _metric_mode(metric: str, mode: Optional[str]) -> str:
    """The mode for `metric` (its direction in vocabulary.METRICS when not given); a contrary mode is an error."""
    natural = "max" if METRICS[metric].higher_is_better else "min"
    if mode is not None and mode != natural:
        raise ValueError(f"{metric} is {'higher' if natural == 'max' else 'lower'} is better: mode must be "
                         f"{natural!r} (or leave mode out)")
    return natural


class TuneSettings(_Strict):
    """`tune:`: Tune checkpoints and the metric Tune ranks trials by (its table, ResultGrid.get_best_result).

    A trial saves a resume point (embeddings, AdamW, RNG, step) every `checkpoint_every` optimisation steps, but only
    once `checkpoint_min_seconds` have passed since its last one (or its start): a retried trial then loses at most
    about that much work, and a short trial, which a retry redoes faster than Tune stores a checkpoint, saves none.
    (Each checkpoint also makes Tune snapshot the experiment's state: many in a few seconds would be a bottleneck.)
    """

    checkpoint_every: PosInt = 50
    checkpoint_min_seconds: NonNegFloat = 120.0
    metric: Annotated[str, AfterValidator(_per_sample_metric)] = "motion_fidelity"
    mode: Optional[Literal[MODES]] = None  # type: ignore[valid-type]  # default: the metric's direction

    @model_validator(mode="after")
    def _direction(self) -> "TuneSettings":
        self.mode = _metric_mode(self.metric, self.mode)
        return self


class WandbTracking(_Strict):
    """Weights & Biases through Tune's WandbLoggerCallback; the API key comes from the environment (WANDB_API_KEY)."""

    project: Text
    group: Optional[Text] = None
    entity: Optional[Text] = None


class MLflowTracking(_Strict):
    """MLflow through Tune's MLflowLoggerCallback; credentials come from the environment (MLFLOW_TRACKING_*)."""

    tracking_uri: Optional[Text] = None  # None: MLflow's default (./mlruns or MLFLOW_TRACKING_URI)
    experiment_name: Optional[Text] = None  # None: the sweep's name
    tags: dict[str, str] = Field(default_factory=dict)


class Tracking(_Strict):
    wandb: Optional[WandbTracking] = None
    mlflow: Optional[MLflowTracking] = None

    @field_validator("mlflow")
    @classmethod
    def _no_credentials_in_the_uri(cls, v: Optional[MLflowTracking]) -> Optional[MLflowTracking]:
        if v is not None and v.tracking_uri and "@" in v.tracking_uri.split("://", 1)[-1].split("/", 1)[0]:
            raise ValueError("tracking_uri holds credentials; set MLFLOW_TRACKING_USERNAME/PASSWORD in the "
                             "environment instead (specs and Ray logs are not the place for secrets)")
        return v


class Objective(_Strict):
    """What a search maximises (or minimises): metric + Σ penalties, each in its metric's bad direction."""

    metric: Annotated[str, AfterValidator(_per_sample_metric)] = "motion_fidelity"
    mode: Optional[Literal[MODES]] = None  # type: ignore[valid-type]  # default: the metric's direction
    penalty: dict[str, NonNegFloat] = Field(default_factory=dict)  # {appearance_leakage: 0.5}

    @field_validator("penalty")
    @classmethod
    def _penalised_metrics(cls, v: dict[str, float]) -> dict[str, float]:
        bad = [m for m in v if m not in SAMPLE_METRICS]
        if bad:
            raise ValueError(f"penalty on {bad}: not per-sample metrics; accepted: {', '.join(SAMPLE_METRICS)}")
        return v

    @model_validator(mode="after")
    def _check(self) -> "Objective":
        self.mode = _metric_mode(self.metric, self.mode)
        if self.metric in self.penalty:
            raise ValueError(f"penalty on the objective's own metric {self.metric!r}")
        return self


class Asha(_Strict):
    """ASHA early stopping at these inversion steps (each one a checkpoint where the eval set is scored)."""

    rungs: Annotated[list[PosInt], Field(min_length=1)]
    reduction_factor: Optional[Annotated[float, Field(gt=1)]] = None  # default: the rungs' ratio if geometric, else 2

    @field_validator("rungs")
    @classmethod
    def _sorted(cls, v: list[int]) -> list[int]:
        return sorted(set(v))


class SearchScheduler(_Strict):
    asha: Optional[Asha] = None


class EvalSet(_Strict):
    """The small generation set scored at each rung: the first `prompts` prompts of each video × `seeds` seeds."""

    prompts: PosInt = 1
    seeds: PosInt = 1


class Search(_Strict):
    """`search:`: Tune samples the space, scores each sample's eval set at its rungs, ASHA stops the weaker."""

    objective: Objective = Field(default_factory=Objective)
    space: dict[str, Any]
    algorithm: Literal[SEARCH_ALGORITHMS] = "random"  # type: ignore[valid-type]
    scheduler: Optional[SearchScheduler] = None  # None: every sample runs to its end (no early stopping)
    samples: PosInt = 16
    eval: EvalSet = Field(default_factory=EvalSet)
    seed: Optional[NonNegInt] = None  # the searcher's seed (the same samples on every run)
    grid: Optional[bool] = None  # also run the spec's grid; default: whether the spec has an `axes:` block

    @field_validator("space")
    @classmethod
    def _space(cls, v: dict[str, Any]) -> dict[str, dict[str, list]]:
        """Each key an axis name; each value normalised to {kind: values}; every problem listed."""
        if not v:
            raise ValueError("empty space; give at least one setting to search, e.g. inversion.lr")
        out: dict[str, dict[str, list]] = {}
        problems: list[str] = []
        for key, domain in v.items():
            try:
                out[key] = _space_domain(str(key), domain)
            except ValueError as exc:  # lines from the axis check already start with the key
                problems.extend(line if line.startswith(str(key)) else f"{key}: {line}"
                                for line in str(exc).splitlines())
        if problems:
            raise ValueError("\n".join(problems))
        return out

    @property
    def rungs(self) -> list[int]:
        return list(self.scheduler.asha.rungs) if self.scheduler and self.scheduler.asha else []


def _space_domain(key: str, domain: Any) -> dict[str, list]:
    """`[a, b]` / `{choice: [...]}` / `{loguniform|uniform|randint: [lo, hi]}` for axis `key`, validated."""
    kind, values = "choice", domain
    if isinstance(domain, dict):
        if len(domain) != 1 or next(iter(domain)) not in SPACE_KINDS:
            raise ValueError(f"give a list of values or one of {{{' | '.join(SPACE_KINDS)}: [...]}}, got {domain!r}")
        kind, values = next(iter(domain.items()))
    if not isinstance(values, list) or not values:
        raise ValueError(f"{kind} needs a non-empty list, got {values!r}")
    base = _axis_type(key)  # raises for names that are not axes
    if kind != "choice":
        if len(values) != 2 or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in values) \
                or not values[0] < values[1]:
            raise ValueError(f"{kind} needs [low, high] numbers with low < high, got {values!r}")
        if kind == "randint" and (base is not int or not all(float(x).is_integer() for x in values)):
            raise ValueError(f"randint draws integers: {key} is not an integer setting or the bounds are not integers"
                             if base is not int else f"randint needs integer bounds, got {values!r}")
        if kind in ("loguniform", "uniform") and base is not float:
            raise ValueError(f"{kind} draws real numbers but {key} takes "
                             + ("integers: use randint or a list" if base is int else "names: give a list"))
        if kind == "loguniform" and values[0] <= 0:
            raise ValueError(f"loguniform needs low > 0, got {values[0]}")
    try:  # the values (or the range's ends) must be values the axis accepts: the grid's own checks
        checked = Axes.model_validate({key: values}).values()[key]
    except ValidationError as exc:
        raise ValueError("\n".join(_problems(exc, {}))) from None
    return {kind: [int(x) for x in checked] if kind == "randint" else checked}


def _axis_type(key: str) -> type:
    """int | float | str: what a searched axis takes (ValueError for a name that is not an axis)."""
    if key in DESIGN_AXES:
        return int if key == "seed" else str
    stage, _, name = key.partition(".")
    config = {"inversion": InversionBlock, "generation": GenerationBlock}.get(stage)
    if config is None or name not in config.model_fields or name in LIST_SETTINGS or name in NOT_AXES:
        raise ValueError(f"not a searchable setting; accepted: {', '.join(DESIGN_AXES)}, inversion.<name>, "
                         "generation.<name> (a scalar setting, as in axes:)")
    return _base_type(config.model_fields[name].annotation)


def _base_type(annotation: Any) -> type:
    origin = get_origin(annotation)
    if origin is Annotated:
        return _base_type(get_args(annotation)[0])
    if origin is Union:
        return _base_type(next(a for a in get_args(annotation) if a is not type(None)))
    if origin is Literal:
        return str
    return annotation


# --------------------------------------------------------------------------------------------------
# The spec.

class Spec(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=100)]
    preset: Optional[str] = None  # required unless `axes.preset` names the presets (then: its first)
    # Another copy of the preset's weights: a hub id or local dir; with a preset axis, a mapping {preset: dir}.
    model: Optional[Union[Text, dict[str, Text]]] = None
    storage: Text = "./results"
    data: Annotated[list[DataItem], Field(min_length=1)]
    axes: Axes = Field(default_factory=Axes)
    inversion: InversionBlock = Field(default_factory=InversionBlock)
    generation: GenerationBlock = Field(default_factory=GenerationBlock)
    metrics: MetricsBlock = Field(default_factory=MetricsBlock)
    # Real videos FID/KID compare against: a folder of videos / frame folders, or a .txt/.jsonl/.csv manifest.
    # None = every frame of the sweep's own reference videos. Not a metric setting: it changes no sample.
    reference_set: Optional[Text] = None
    resources: Resources = Field(default_factory=Resources)
    tune: TuneSettings = Field(default_factory=TuneSettings)
    tracking: Tracking = Field(default_factory=Tracking)
    # A search (instead of the grid when `axes:` is absent, besides it when present); see `Search`.
    search: Optional[Search] = None

    # -- validation -------------------------------------------------------------------------------

    @classmethod
    def model_validate(cls, obj: Any, *, context: Optional[dict] = None, **kwargs: Any) -> "Spec":  # type: ignore[override]
        """pydantic validation, with every problem gathered into one `SpecError`.

        context: base_dir (relative paths; default cwd), check_files (default True), source (for messages).
        """
        ctx = {"base_dir": os.getcwd(), "check_files": True, **(context or {})}
        try:
            return super().model_validate(obj, context=ctx, **kwargs)
        except ValidationError as exc:
            raise SpecError(_problems(exc, ctx), source=ctx.get("source")) from None

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, v: str) -> str:
        if v in RESERVED_NAMES:
            raise ValueError(f"{v!r} is reserved (the content-addressed store lives there); pick another name")
        return v

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and v not in PRESETS:
            raise ValueError(f"unknown preset {v!r}; accepted: {', '.join(PRESETS)}")
        return v

    @field_validator("storage")
    @classmethod
    def _resolve_storage(cls, v: str, info: ValidationInfo) -> str:
        if "://" in v:
            scheme = v.split("://", 1)[0].lower()
            if scheme not in STORAGE_SCHEMES:
                raise ValueError(f"unsupported storage scheme {scheme!r}; accepted: a local folder or "
                                 + ", ".join(f"{s}://" for s in STORAGE_SCHEMES))
            return v
        path = Path(v).expanduser()
        if not path.is_absolute():  # relative to the spec file, like the videos
            path = Path((info.context or {}).get("base_dir") or os.getcwd()) / path
        return os.path.normpath(path)

    @field_validator("reference_set")
    @classmethod
    def _resolve_reference_set(cls, v: Optional[str], info: ValidationInfo) -> Optional[str]:
        if v is None:
            return v
        if "://" in v:
            raise ValueError(f"{v!r}: the reference set must be a folder or manifest the workers can read "
                             "(a local or shared path), not a URI")
        path = Path(v).expanduser()
        if not path.is_absolute():
            path = Path((info.context or {}).get("base_dir") or os.getcwd()) / path
        if (info.context or {}).get("check_files", True) and not path.exists():
            raise ValueError(f"reference set not found: {path} (a folder of videos or a .txt/.jsonl/.csv manifest)")
        return os.path.normpath(path)

    @field_validator("data", mode="before")
    @classmethod
    def _load_manifest(cls, v: Any, info: ValidationInfo) -> Any:
        """`data: manifest.jsonl|.csv` -> the list of items; its relative videos resolve against its folder."""
        if not isinstance(v, (str, os.PathLike)):
            return v
        ctx = info.context if info.context is not None else {}
        path = Path(v).expanduser()
        if not path.is_absolute():
            path = Path(ctx.get("base_dir") or os.getcwd()) / path
        items = read_manifest(path)
        ctx["data_base_dir"] = str(path.parent)
        ctx["manifest"] = str(path)
        return items

    @model_validator(mode="after")
    def _fill_and_cross_check(self) -> "Spec":
        """Fill preset defaults; checks that need several fields (run once the fields themselves are valid)."""
        swept = self.axes.preset
        if self.preset is None:
            if not swept:
                raise ValueError("preset: required (one of: " + ", ".join(PRESETS) + "), or give several as an "
                                 "axis: `axes: {preset: [zeroscope, videocrafter2]}`")
            self.preset = swept[0]
        problems: list[str] = []
        if isinstance(self.model, dict):
            unknown = sorted(set(self.model) - set(self.presets))
            if unknown:
                problems.append(f"model: {unknown} are not presets of this sweep ({', '.join(self.presets)}); the "
                                "mapping gives each swept preset's weights")
        elif self.model is not None and swept and len(swept) > 1:
            problems.append(f"model: {self.model!r} would load the same weights for every preset of the axis "
                            f"{swept}; give one folder per preset, e.g. `model: {{{swept[0]}: /models/{swept[0]}}}`")
        preset = PRESETS[self.preset]
        if not swept:  # with a preset axis, each point takes its own preset's frames and size (plan.canonical_point)
            for key, value in (("frames", preset.num_frames), ("height", preset.height), ("width", preset.width)):
                if getattr(self.inversion, key) is None:
                    setattr(self.inversion, key, value)
        if self.generation.fps is None:
            self.generation.fps = preset.fps
        if self.metrics.clip is None:
            self.metrics.clip = preset.clip
        if self.metrics.tracker is None:
            self.metrics.tracker = preset.tracker

        # video ids: default to the file stem; two different videos may not share one
        owners: dict[str, str] = {}
        for i, item in enumerate(self.data):
            if item.id is None:
                stem = Path(item.video.rstrip("/")).name
                item.id = Path(stem).stem if Path(stem).suffix.lower() in VIDEO_SUFFIXES else stem
            prev = owners.setdefault(item.id, item.video)
            if prev != item.video:
                problems.append(f"data[{i}].id: video id {item.id!r} is also used by {prev}; "
                                f"give each video a distinct `id:`")
        # checkpoints against steps (block value or every value of the steps axis)
        inv_axes = self.axes.inversion
        steps_values = inv_axes.steps or [self.inversion.steps]
        checkpoints = self.inversion.checkpoints
        if checkpoints:
            for steps in steps_values:
                if not [c for c in checkpoints if c <= steps]:
                    problems.append(f"inversion.checkpoints: none of {checkpoints} is <= steps={steps}; "
                                    f"every steps value needs at least one checkpoint")
            too_big = [c for c in checkpoints if c > max(steps_values)]
            if too_big:
                problems.append(f"inversion.checkpoints: {too_big} exceed steps={max(steps_values)}")
        frames_values = inv_axes.frames or [self.inversion.frames or max(PRESETS[p].num_frames for p in self.presets)]
        slots_values = inv_axes.slots or [self.inversion.slots]
        if max(frames_values) > min(slots_values):
            problems.append(f"inversion.frames: {max(frames_values)} frames do not fit in "
                            f"slots={min(slots_values)} (the embeddings reserve `slots` frames)")
        if self.search is not None:
            if self.search.grid is None:  # said once, so a dumped and reloaded spec means the same
                self.search.grid = "axes" in self.model_fields_set
            problems += self._search_problems()
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def _search_problems(self) -> list[str]:
        search = self.search
        problems = []
        space = search.space
        steps = space.get("inversion.steps")
        longest = (max(next(iter(steps.values()))) if steps else
                   max(self.axes.inversion.steps or [self.inversion.steps]))
        late = [r for r in search.rungs if r > longest]
        if late:
            problems.append(f"search.scheduler.asha.rungs: {late} exceed the longest inversion ({longest} steps)")
        if search.eval.seeds > 1 and "generation.seed" in space:
            problems.append("search.eval.seeds: generation.seed is searched; leave seeds at 1")
        if search.eval.seeds > 1 and self.generation.seed is None and "seed" in space:
            problems.append("search.eval.seeds: with `seed` searched, the eval seeds need generation.seed set")
        return problems

    # -- helpers used by the planner and the trainable ---------------------------------------------

    @property
    def has_grid(self) -> bool:
        """Whether the spec runs its grid: always without `search:`; besides it when `axes:` is given (or
        `search.grid: true`)."""
        return self.search is None or bool(self.search.grid)

    def axis_values(self) -> dict[str, list]:
        return self.axes.values()

    def checkpoints_for(self, steps: int) -> list[int]:
        """The checkpoints evaluated for a run of `steps` steps (default: the paper's step 250 and the last)."""
        if not self.inversion.checkpoints:
            return sorted({PAPER_CHECKPOINT, steps}) if steps >= PAPER_CHECKPOINT else [steps]
        return [c for c in self.inversion.checkpoints if c <= steps]

    @property
    def presets(self) -> list[str]:
        """The sweep's presets: the axis's values, else the one `preset:`."""
        return list(self.axes.preset or [self.preset])

    def model_for(self, preset: str) -> Optional[str]:
        """The `model:` override of this preset's weights (None: the preset's own)."""
        if isinstance(self.model, dict):
            return self.model.get(preset)
        return self.model

    def base_model_for(self, preset: str) -> str:
        """Which weights a preset's trials load: its `model` override, else the preset's model id."""
        return self.model_for(preset) or PRESETS[preset].model

    @property
    def base_model(self) -> str:
        """The weights of the spec's `preset:` (see base_model_for)."""
        return self.base_model_for(self.preset)


# --------------------------------------------------------------------------------------------------
# Loading.

def load_spec(path: str | os.PathLike, *, check_files: bool = True) -> Spec:
    """Read and validate a YAML spec; relative paths (videos, manifest, storage) resolve against its folder."""
    path = Path(path).expanduser()
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError([f"cannot read the spec file: {exc.strerror or exc}"], source=path) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError([f"not valid YAML: {exc}"], source=path) from None
    if not isinstance(raw, dict):
        raise SpecError([f"the spec must be a YAML mapping (name:, preset:, data:, axes: ...), got "
                         f"{type(raw).__name__}"], source=path)
    context = {"base_dir": str(path.resolve().parent), "check_files": check_files, "source": str(path)}
    return Spec.model_validate(raw, context=context)


def read_manifest(path: Path) -> list[dict]:
    """A .jsonl (one item per line) or .csv (header video,source_prompt,prompts[,id]; prompts split by `|`)."""
    if not path.exists():
        raise ValueError(f"manifest not found: {path}")
    suffix = path.suffix.lower()
    items: list[dict] = []
    problems: list[str] = []
    if suffix == ".jsonl":
        for n, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(f"{path.name} line {n}: not JSON ({exc.msg})")
                continue
            items.append(item)
    elif suffix == ".csv":
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            missing = {"video", "source_prompt", "prompts"} - set(reader.fieldnames or [])
            if missing:
                raise ValueError(f"{path.name}: missing column(s) {sorted(missing)} "
                                 f"(header: video,source_prompt,prompts[,id,sha256])")
            for row in reader:
                item = {k: v for k, v in row.items() if k is not None and v not in (None, "")}
                if "prompts" in item:
                    item["prompts"] = [p.strip() for p in item["prompts"].split("|") if p.strip()]
                items.append(item)
    else:
        raise ValueError(f"manifest {path.name}: accepted formats are .jsonl and .csv")
    if problems:
        raise ValueError("\n".join(problems))
    return items


# --------------------------------------------------------------------------------------------------
# Turning pydantic errors into one line per problem.

def _problems(exc: ValidationError, ctx: dict) -> list[str]:
    out: list[str] = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        where = _loc_str(loc, ctx)
        kind = err["type"]
        if kind == "value_error":  # our own validators; may hold several lines, each its own problem
            lines = str(err["ctx"]["error"]).splitlines()
            out.extend(f"{where}: {line}" if where else line for line in lines)
            continue
        if kind == "extra_forbidden":
            msg = _unknown_key_message(loc)
        elif kind == "missing":
            msg = "required field is missing"
        elif kind == "literal_error":
            msg = f"{err['input']!r} is not accepted; accepted: {err['ctx']['expected']}"
            if loc[:2] in (("axes", "qk"), ("axes", "v")):
                msg += " (to remove an embedding use the `remove` axis)"
        elif kind == "too_short" and loc and loc[-1] in ("prompts", "data"):
            msg = "empty list; give at least one" + (" prompt" if loc[-1] == "prompts" else " video")
        elif kind == "too_short":
            msg = "empty list; give at least one value"
        else:
            msg = f"{err['msg']} (got {_shortened_repr(err.get('input'))})"
        out.append(f"{where}: {msg}" if where else msg)
    return out


def _loc_str(loc: tuple, ctx: dict) -> str:
    s = ""
    for part in loc:
        if isinstance(part, int):
            s += f"[{part}]"
        else:
            s += f".{part}" if s else str(part)
    if ctx.get("manifest") and len(loc) > 1 and loc[0] == "data" and isinstance(loc[1], int):
        s += f" (manifest {Path(ctx['manifest']).name} item {loc[1] + 1})"
    return s


def _unknown_key_message(loc: tuple) -> str:
    if len(loc) == 3 and loc[0] == "axes" and loc[2] in LIST_SETTINGS:
        return (f"{loc[1]}.{loc[2]} is a list setting and cannot be an axis"
                + ("; list the steps to evaluate in inversion.checkpoints" if loc[2] == "checkpoints" else ""))
    if len(loc) == 3 and loc[0] == "axes" and loc[2] in NOT_AXES:
        return (f"{loc[1]}.{loc[2]} cannot be an axis: it sets the written file's frame rate and changes no "
                f"generated frame or metric; set it once as {loc[1]}: {{{loc[2]}: N}}")
    model = _model_at(loc[:-1])
    if model is Axes:
        accepted = ["qk", "v", "remove", "debias", "seed", "inversion.<name>", "generation.<name>"]
    elif model in (InversionAxes, GenerationAxes):
        accepted = list(model.model_fields)
    elif model is not None:
        accepted = list(model.model_fields)
    else:
        return "unknown key"
    return f"unknown key; accepted: {', '.join(accepted)}"


def _model_at(loc: tuple) -> Optional[type[BaseModel]]:
    """The pydantic model that validates the mapping at `loc` (to list its accepted keys)."""
    model: Optional[type[BaseModel]] = Spec
    for part in loc:
        if isinstance(part, int):
            continue
        if model is None or part not in model.model_fields:
            return None
        model = _find_model(model.model_fields[part].annotation)
    return model


def _find_model(annotation: Any) -> Optional[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (list, Union, Annotated) or get_args(annotation):
        for arg in get_args(annotation):
            found = _find_model(arg)
            if found is not None:
                return found
    return None


def _shortened_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
