"""A trial's GPU memory and time, before launch: the cost model's predictions for every trial of a plan, on the GPU
types the cluster names, and the warning when a trial cannot fit the GPU share its `resources.gpu` asks for.

    types  = cluster_workers("cluster.yaml")            # node types with GPUs -> GPU type (A10G, A100-80GB, ...)
    budget = predict_plan(plan, [w.gpu for w in types])  # one prediction per trial and GPU type (`model.cost`)
    budget_json(budget)                                  # `plan --json`: predicted_gpu_memory_gib, ..._seconds, gpu
    format_budget(budget)                                # `plan`: one line per distinct trial setting
    fit_warnings(budget, share, types)                   # `plan` and `run` (stderr, before Ray starts)

Ray places a GPU trial on any node with a free share of a GPU and knows nothing of its memory, so a trial must fit
`resources.gpu` × the memory of every GPU type the cluster may launch (`max_workers` > 0) — or of the one type the
user targets (`--gpu-type`). A trial uses one device: a share above 1 buys no more memory than a whole GPU.
Trials on the CPU-only presets (tiny, toy) and sweeps with `resources.gpu: 0` get no GPU prediction and no warning.

Pure Python: `model.cost` is the torch-free cost model (fitted on CPU measurements); nothing here imports torch or Ray.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

import vocabulary
from model.config import GenerationConfig
from model.cost import precision_name
from vocabulary import PRESETS

#: The cluster config read when none is named: the working directory's (a Ray job's --working-dir), else the
#: repository's.
DEFAULT_CLUSTER_YAML = "cluster.yaml"
_REPO_CLUSTER_YAML = Path(__file__).resolve().parents[2] / DEFAULT_CLUSTER_YAML

#: EC2 instance families -> the GPU type (vocabulary.GPU_TYPES) of each of their GPUs; an exact instance type
#: first, then its family (the part before the dot).
INSTANCE_GPUS: dict[str, str] = {
    "p4d.24xlarge": "A100-40GB",
    "p4de.24xlarge": "A100-80GB",
    "p5.48xlarge": "H100-80GB",
    "g4dn": "T4",
    "g5": "A10G",
    "g6": "L4",
    "g6e": "L40S",
}

def _gpu_types() -> dict:
    return vocabulary.GPU_TYPES  # read when used (vocabulary.GpuType: name, memory_gib, peak_tflops, description)


def gpu_preset(preset: str) -> bool:
    """True for the presets that load a real base model (a GPU's work); tiny and toy are built locally (CPU)."""
    return bool(PRESETS[preset].model)


# --------------------------------------------------------------------------------------------------
# The cluster's GPU types.

@dataclass(frozen=True)
class Worker:
    """A GPU node type of the cluster config."""

    node_type: str  # available_node_types key, e.g. gpu-a10g
    instance_type: str  # e.g. g5.2xlarge
    gpu: str  # GPU type (vocabulary.GPU_TYPES key), e.g. A10G
    gpus: int  # GPUs per node
    max_workers: int  # 0: named but not launched (opt-in)

    @property
    def memory_gib(self) -> float:
        return _gpu_types()[self.gpu].memory_gib


def gpu_type_of(instance_type: str) -> Optional[str]:
    """The GPU type of an EC2 instance type (INSTANCE_GPUS), or None when unknown."""
    family = instance_type.split(".", 1)[0]
    gpu = INSTANCE_GPUS.get(instance_type) or INSTANCE_GPUS.get(family)
    return gpu if gpu in _gpu_types() else None


def find_cluster_yaml(path: Optional[str | Path] = None) -> Optional[Path]:
    """`path` (FileNotFoundError if missing), else ./cluster.yaml, else the repository's; None when neither exists."""
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"cluster config {path} not found")
        return path
    for candidate in (Path.cwd() / DEFAULT_CLUSTER_YAML, _REPO_CLUSTER_YAML):
        if candidate.is_file():
            return candidate
    return None


def cluster_workers(path: Optional[str | Path] = None) -> list[Worker]:
    """The GPU node types of a Ray autoscaler config (`available_node_types` with a GPU resource, the head left
    out), their GPU type from the instance type. Empty when no config is found or it names no known GPU."""
    import yaml

    found = find_cluster_yaml(path)
    if found is None:
        return []
    config = yaml.safe_load(found.read_text()) or {}
    head = config.get("head_node_type")
    workers = []
    for name, node in (config.get("available_node_types") or {}).items():
        gpus = int((node.get("resources") or {}).get("GPU", 0) or 0)
        instance = str((node.get("node_config") or {}).get("InstanceType", ""))
        gpu = gpu_type_of(instance)
        if name == head or gpus < 1 or gpu is None:
            continue
        workers.append(Worker(name, instance, gpu, gpus, int(node.get("max_workers", config.get("max_workers", 0)))))
    return workers


def gpu_types_of(workers: Iterable[Worker], target: Optional[str] = None) -> list[str]:
    """The GPU types to predict for: `target` alone, else the workers' (in order, once each), else every known one."""
    if target is not None:
        if target not in _gpu_types():
            raise ValueError(f"unknown GPU type {target!r}; accepted: {', '.join(_gpu_types())}")
        return [target]
    types = list(dict.fromkeys(w.gpu for w in workers))
    return types or list(_gpu_types())


# --------------------------------------------------------------------------------------------------
# Predictions.

@dataclass
class TrialPrediction:
    trial_id: str
    preset: str
    frames: int
    height: int
    width: int
    qk: str
    v: str
    precision: str  # what the model was asked about: fp16 | bf16 | fp32
    inputs: dict  # predict_trial's keyword arguments (but gpu)
    predicted_gpu_memory_gib: dict[str, float] = field(default_factory=dict)  # GPU type -> peak (estimate)
    predicted_gpu_memory_gib_high: dict[str, float] = field(default_factory=dict)  # ... its high end
    predicted_gpu_seconds: dict[str, float] = field(default_factory=dict)
    predicted_gpu_seconds_low: dict[str, float] = field(default_factory=dict)
    predicted_gpu_seconds_high: dict[str, float] = field(default_factory=dict)
    trials_per_gpu: dict[str, int] = field(default_factory=dict)  # floor(GPU memory / high end)
    dominant: str = ""  # the stage that sets the peak: inversion | generation | ddim | vae_decode

    @property
    def setting(self) -> str:
        """e.g. "zeroscope 24×320×576 qk=1d v=2d" (fp32/bf16 named; fp16 is the default)."""
        text = f"{self.preset} {self.frames}×{self.height}×{self.width} qk={self.qk} v={self.v}"
        return text if self.precision == "fp16" else f"{text} {self.precision}"

    def group(self) -> tuple:
        """Trials that share this have the same memory (they differ in steps and generations: time)."""
        return (self.preset, self.frames, self.height, self.width, self.qk, self.v, self.precision)

    def memory_high(self, gpu: str) -> float:
        return self.predicted_gpu_memory_gib_high[gpu]


@dataclass
class GpuBudget:
    gpu_types: list[str]
    trials: list[TrialPrediction]  # the GPU presets' trials (CPU presets get none)
    cpu_trials: int = 0  # trials on the tiny/toy presets, not predicted
    unpredicted: dict[str, str] = field(default_factory=dict)  # preset -> why the cost model has no prediction
    unpredicted_trials: int = 0

    def largest(self) -> Optional[TrialPrediction]:
        """The trial that decides fit: the highest predicted peak (high end) on the first GPU type."""
        if not self.trials:
            return None
        return max(self.trials, key=lambda t: t.memory_high(self.gpu_types[0]))

    def total_seconds(self, gpu: str, which: str = "") -> float:
        name = "predicted_gpu_seconds" + (f"_{which}" if which else "")
        return sum(getattr(t, name)[gpu] for t in self.trials)


def trial_preset(plan, trial) -> str:
    """The trial's base model (the spec's, or its value of the preset axis)."""
    return trial.preset or plan.spec.preset


def trial_inputs(plan, trial) -> dict:
    """`model.cost.predict_trial`'s arguments (but gpu) for one planned trial: its preset, size, designs, the
    optimisation steps (0 for the base model), the DDIM steps (only for the first trial of each DDIM inversion:
    the others find it made), and its generations (count, denoising steps each, the largest batch it runs)."""
    spec = plan.spec
    inv = trial.inversion
    precision = inv.get("precision") or getattr(spec.inversion, "precision", None) or "auto"
    gens = list({g.generation_key: g for g in trial.generations}.values())  # two samples may share a clip
    groups: dict[tuple, list] = {}
    for g in gens:  # the trial batches the clips of one checkpoint × debias × settings (sweep.run.trial)
        groups.setdefault((g.checkpoint, g.debias, repr(sorted(g.params.items()))), []).append(g)
    batch = max((min(len(m), int(m[0].params.get("batch_size", GenerationConfig.batch_size)))
                 for m in groups.values()), default=1)
    steps = [int(g.params.get("steps", GenerationConfig.steps)) for g in gens]
    return {
        "frames": int(inv["frames"]), "height": int(inv["height"]), "width": int(inv["width"]),
        "qk": trial.qk, "v": trial.v, "precision": precision_name(str(precision)), "checkpointing": True,
        "inversion_steps": 0 if trial.base else int(inv["steps"]), "ddim_steps": int(inv["ddim_steps"]),
        "generations": len(steps), "denoising_steps": round(sum(steps) / len(steps)) if steps else 0,
        "generation_batch": max(batch, 1),
    }


def predict_plan(plan, gpu_types: list[str]) -> GpuBudget:
    """The cost model's prediction of every trial of `plan` (on a GPU preset) on each GPU type."""
    from model.cost import predict_trial

    cache: dict[tuple, Any] = {}
    made: set[str] = set()  # DDIM inversions counted already (the first trial that needs one makes it)
    budget = GpuBudget(list(gpu_types), [])
    for trial in plan.trials:
        preset = trial_preset(plan, trial)
        if not gpu_preset(preset):
            budget.cpu_trials += 1
            continue
        if preset in budget.unpredicted:
            budget.unpredicted_trials += 1
            continue
        inputs = trial_inputs(plan, trial)
        if trial.ddim_key in made:
            inputs["ddim_steps"] = 0
        made.add(trial.ddim_key)
        row = TrialPrediction(trial.trial_id, preset, inputs["frames"], inputs["height"], inputs["width"], trial.qk,
                              trial.v, inputs["precision"], inputs)
        for gpu in gpu_types:
            key = (preset, gpu, *sorted(inputs.items()))
            if key not in cache:
                try:
                    cache[key] = predict_trial(preset, gpu=gpu, **inputs)
                except ValueError as exc:  # no fitted model for this preset: said, and the rest still predicted
                    cache[key] = exc
            cost = cache[key]
            if isinstance(cost, ValueError):
                budget.unpredicted[preset] = str(cost)
                budget.unpredicted_trials += 1
                break
            row.predicted_gpu_memory_gib[gpu] = round(float(cost.peak_memory_gib), 2)
            row.predicted_gpu_memory_gib_high[gpu] = round(float(cost.peak_memory_gib_high), 2)
            row.predicted_gpu_seconds[gpu] = round(float(cost.gpu_seconds), 1)
            row.predicted_gpu_seconds_low[gpu] = round(float(cost.gpu_seconds_low), 1)
            row.predicted_gpu_seconds_high[gpu] = round(float(cost.gpu_seconds_high), 1)
            row.trials_per_gpu[gpu] = trials_per_gpu(_gpu_types()[gpu].memory_gib, float(cost.peak_memory_gib_high))
            row.dominant = str(getattr(cost, "dominant", "") or "")
        else:
            budget.trials.append(row)
    return budget


def trials_per_gpu(memory_gib: float, peak_high_gib: float) -> int:
    """How many such trials fit one GPU by memory: floor(memory / predicted peak's high end)."""
    return int(memory_gib // peak_high_gib) if peak_high_gib > 0 else 0


# --------------------------------------------------------------------------------------------------
# Fit: the warning before launch.

@dataclass(frozen=True)
class FitProblem:
    """The trials that cannot fit their share of one GPU type, represented by the largest."""

    trial: TrialPrediction  # the largest of them
    gpu: str
    share: float  # resources.gpu
    available_gib: float  # min(share, 1) × the GPU's memory
    trials: int  # how many trials do not fit
    settings: int  # ... in how many distinct settings


def checked_gpu_types(workers: list[Worker], target: Optional[str] = None) -> list[str]:
    """The GPU types a trial must fit: `target`, else those of the node types the cluster may launch (Ray places a
    trial on any of them), else every one the cluster names, else every known one."""
    if target is not None:
        return gpu_types_of(workers, target)
    launched = [w for w in workers if w.max_workers > 0]
    return gpu_types_of(launched or workers)


def fit_problems(budget: GpuBudget, share: float, gpu_types: list[str]) -> list[FitProblem]:
    """One problem per GPU type where some trial's predicted peak (high end) exceeds min(share, 1) × the GPU's
    memory (a trial runs on one device). None when share is 0 (a CPU run)."""
    if share <= 0:
        return []
    problems = []
    for gpu in gpu_types:
        available = min(share, 1.0) * _gpu_types()[gpu].memory_gib
        over = [t for t in budget.trials if gpu in t.predicted_gpu_memory_gib_high and t.memory_high(gpu) > available]
        if over:
            largest = max(over, key=lambda t: t.memory_high(gpu))
            problems.append(FitProblem(largest, gpu, share, available, len(over), len({t.group() for t in over})))
    return problems


def fit_warnings(budget: GpuBudget, share: float, workers: list[Worker], target: Optional[str] = None) -> list[str]:
    """The warnings `plan` and `run` print: one per GPU type a trial may be placed on (`checked_gpu_types`) whose
    `share` is too small for some trials, naming the largest, the numbers and the fixes."""
    lines = []
    for p in fit_problems(budget, share, checked_gpu_types(workers, target)):
        t, gpu = p.trial, p.gpu
        memory = _gpu_types()[gpu].memory_gib
        who = f"trial {t.trial_id} ({t.setting})"
        if p.trials > 1:
            who += f" and {p.trials - 1} more of the {len(budget.trials)} trials"
        head = (f"{who}: predicted peak GPU memory {t.predicted_gpu_memory_gib[gpu]:.1f} GiB (up to "
                f"{t.memory_high(gpu):.1f}) > {_num(share)} × {gpu} {_num(memory)} GiB = {_num(p.available_gib)} GiB"
                + (" (a trial uses one GPU)" if share > 1 else "") + " and may run out of memory there")
        lines.append(head + "; " + "; ".join(_fixes(t, gpu, share, workers)))
    return lines


def _fixes(t: TrialPrediction, gpu: str, share: float, workers: list[Worker]) -> list[str]:
    memory = _gpu_types()[gpu].memory_gib
    high = t.memory_high(gpu)
    fixes = []
    per_gpu = trials_per_gpu(memory, high)
    if share < 1 and per_gpu >= 1:
        fixes.append(f"set resources.gpu: {_num(1 / per_gpu)} or more ({per_gpu} such trial(s) per {gpu})")
    batch = int(t.inputs.get("generation_batch", 1))
    if t.dominant in ("generation", "vae_decode") and batch > 1:
        one = _predict_high(t, gpu, generation_batch=1)
        fixes.append(f"(the peak is generation's: {batch} clips per pipeline call, a video's prompts × seeds up to "
                     f"{GenerationConfig.batch_size}; with one prompt and seed per video it would be up to "
                     f"{one:.1f} GiB)")
    frames = _frames_that_fit(t, gpu, min(share, 1.0) * memory)
    if frames:
        fixes.append(f"use fewer frames (inversion.frames: {frames} or fewer fits)")
    elif t.frames > 1:
        fixes.append("use fewer frames or a smaller inversion.height/width")
    bigger = [w for w in workers if min(share, 1.0) * w.memory_gib >= high]
    if bigger:
        w = max(bigger, key=lambda w: w.memory_gib)
        steps = [] if w.max_workers > 0 else ["raise its max_workers"]
        small = [x.node_type for x in workers if x.max_workers > 0 and min(share, 1.0) * x.memory_gib < high]
        steps += [f"set {name}'s max_workers to 0" for name in small]
        fixes.append(f"or use the {w.node_type} worker ({w.gpu} {_num(w.memory_gib)} GiB"
                     + (": " + " and ".join(steps) + " in cluster.yaml" if steps else "") + ")")
    elif not workers:
        fixes.append("or use a GPU with more memory")
    return fixes


def _predict_high(t: TrialPrediction, gpu: str, **changes) -> float:
    """The predicted peak's high end of the trial with some inputs changed."""
    from model.cost import predict_trial

    return float(predict_trial(t.preset, gpu=gpu, **{**t.inputs, **changes}).peak_memory_gib_high)


def _frames_that_fit(t: TrialPrediction, gpu: str, available: float) -> Optional[int]:
    """The most frames (below the trial's) whose predicted peak's high end fits `available` GiB, or None."""
    low, high, best = 1, t.frames - 1, None
    while low <= high:  # memory grows with frames
        mid = (low + high) // 2
        if _predict_high(t, gpu, frames=mid) <= available:
            best, low = mid, mid + 1
        else:
            high = mid - 1
    return best


def _num(x: float) -> str:
    return format(round(x, 2), "g")


# --------------------------------------------------------------------------------------------------
# Output: plan --json and plan's text.

def budget_json(budget: GpuBudget) -> dict:
    """`plan --json`'s keys: the largest trial's `predicted_gpu_memory_gib` / `predicted_gpu_seconds` (keyed by GPU
    type) and a `gpu` block with every trial's row and the sweep's totals."""
    largest = budget.largest()
    rows = []
    for t in budget.trials:
        row = _finite(asdict(t))
        row.pop("inputs")
        row["setting"] = t.setting
        rows.append(row)
    return _finite({
        "predicted_gpu_memory_gib": dict(largest.predicted_gpu_memory_gib) if largest else {},
        "predicted_gpu_seconds": dict(largest.predicted_gpu_seconds) if largest else {},
        "gpu": {
            "gpu_types": {g: _gpu_types()[g].memory_gib for g in budget.gpu_types},
            "largest_trial": largest.trial_id if largest else None,
            "model": "model.cost (fitted on CPU measurements; predicted_gpu_memory_gib_high and "
                     "predicted_gpu_seconds_low/_high bound the estimate)",
            "trials": rows,
            "cpu_trials": budget.cpu_trials,
            "unpredicted": dict(budget.unpredicted),
            "total_gpu_seconds": {g: round(budget.total_seconds(g), 1) for g in budget.gpu_types},
            "total_gpu_seconds_low": {g: round(budget.total_seconds(g, "low"), 1) for g in budget.gpu_types},
            "total_gpu_seconds_high": {g: round(budget.total_seconds(g, "high"), 1) for g in budget.gpu_types},
        },
    })


def _finite(obj):
    """JSON has no infinity: a GPU that cannot run the precision (seconds inf) is null."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return None if isinstance(obj, float) and not math.isfinite(obj) else obj


def format_budget(budget: GpuBudget, share: Optional[float] = None) -> str:
    """The block `motion-sweep plan` prints after the counts: one line per distinct trial setting (its largest trial's
    peak memory; its trials' mean GPU time and the range of their low–high bounds), a column pair per GPU type."""
    if not budget.trials:
        return "".join(f"  GPU per trial: {preset}'s trials not predicted: {why}\n"
                       for preset, why in budget.unpredicted.items()).rstrip("\n")
    groups: dict[tuple, list[TrialPrediction]] = {}
    for t in budget.trials:
        groups.setdefault(t.group(), []).append(t)
    types = budget.gpu_types
    width = max(len(t.setting) for t in budget.trials)
    cols = {gpu: f"{gpu} {_num(_gpu_types()[gpu].memory_gib)} GiB: GPU-s" for gpu in types}
    heads = "".join(f"  {cols[gpu]:>{max(len(cols[gpu]), 18)}} {'/GPU':>4}" for gpu in types)
    lines = ["  GPU per trial, predicted (model.cost: a cost model fitted on CPU measurements; peak memory as estimate "
             "(high end), GPU-seconds as estimate (low–high); /GPU: such trials that fit one GPU)",
             f"    {'trials':>6}  {'setting':<{width}}  {'peak GiB':>12}{heads}"]
    for members in groups.values():
        t = max(members, key=lambda m: max(m.predicted_gpu_memory_gib_high.values()))
        gpu_peak = max(types, key=lambda g: t.memory_high(g))
        line = (f"    {len(members):>6}  {t.setting:<{width}}  "
                f"{t.predicted_gpu_memory_gib[gpu_peak]:>5.1f} ({t.memory_high(gpu_peak):>4.1f})")
        for gpu in types:
            mean = sum(m.predicted_gpu_seconds[gpu] for m in members) / len(members)
            low = min(m.predicted_gpu_seconds_low[gpu] for m in members)
            high = max(m.predicted_gpu_seconds_high[gpu] for m in members)
            line += f"  {f'{mean:.0f} ({low:.0f}–{high:.0f})':>{max(len(cols[gpu]), 18)}} {t.trials_per_gpu[gpu]:>4}"
        lines.append(line)
    totals = []
    for gpu in types:
        total = budget.total_seconds(gpu)
        totals.append(f"{gpu} {total / 3600:.1f} GPU-h ({budget.total_seconds(gpu, 'low') / 3600:.1f}–"
                      f"{budget.total_seconds(gpu, 'high') / 3600:.1f})")
    lines.append(f"    whole sweep ({len(budget.trials)} trials, before the store): " + ", ".join(totals))
    if budget.cpu_trials:
        lines.append(f"    ({budget.cpu_trials} trial(s) on CPU presets not predicted)")
    for preset, why in budget.unpredicted.items():
        lines.append(f"    ({preset}'s trials not predicted: {why})")
    if share is not None:
        lines.append(f"    resources.gpu per trial: {_num(share)}" + (" (CPU only: no GPU is asked for)" if share <= 0
                                                                       else ""))
    return "\n".join(lines)


def plan_budget(plan, cluster: Optional[str | Path] = None, target: Optional[str] = None
                ) -> tuple[Optional[GpuBudget], list[str]]:
    """(budget, warnings) for a plan: None and [] when no trial is on a GPU preset (nothing imported then)."""
    presets = {trial_preset(plan, t) for t in plan.trials} or {plan.spec.preset}
    if not any(gpu_preset(p) for p in presets):
        return None, []
    workers = cluster_workers(cluster)
    budget = predict_plan(plan, gpu_types_of(workers, target))
    return budget, fit_warnings(budget, float(plan.spec.resources.gpu), workers, target)



def gpu_fit_warnings(plan, cluster: Optional[str | Path] = None, target: Optional[str] = None) -> list[str]:
    """`run`'s check before Ray starts: `plan_budget`'s warnings. A bad --cluster/--gpu-type is the user's error;
    a cost model that fails says so in one line and launches nothing less."""
    try:
        return plan_budget(plan, cluster, target)[1]
    except (ValueError, FileNotFoundError):
        raise
    except Exception as exc:  # an advisory: never the reason a sweep does not run
        return [f"no GPU memory prediction ({type(exc).__name__}: {exc})"]
