"""The project's vocabulary, said once: presets, axes and their values, debias modes, metrics.

`model/`, `evaluation/` and `sweep/` all import their names from here; nothing else spells them out.
Pure Python (no torch, no pyarrow), so the spec, the CLI and the report load fast.

Column-naming rule used by every table: a column named after an axis (`qk`, `debias`, `inversion.lr`,
`checkpoint_step`, ...) holds the value the user *requested*; the same name with `_applied` holds the
value of the experiment that answered it (its canonical variant). They differ where a setting means
nothing: `debias` is `normalize` in a grid point that removed MV, `debias_applied` is `off`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

# ------------------------------------------------------------------------------------------- designs
#: The marker for a component a variant does not have: a removed MQK/MV design, and the debias of an
#: absent MV. One marker in every table.
OFF = "off"

QK_DESIGNS = ("1d", "2d")        #: Motion Query-Key: 1d [1,F,C] (paper) or 2d [H·W,F,C]
V_DESIGNS = ("2d", "1d")         #: Motion Value: 2d [H·W,F,C] (paper) or 1d [1,F,C]
REMOVE = ("none", "qk", "v", "both")  #: components removed ("both" = the plain base model)
#: MV debias at generation: difference (the paper's), normalize, none (as trained), drop (MV unused).
DEBIAS_MODES = ("difference", "normalize", "none", "drop")
LOSSES = ("base", "debiased_temporal")
NOISE_INITS = ("blend", "random")
TRACKERS = ("lk", "cotracker3")
FID_FEATURES = ("auto", "inception", "clip")

#: The design axes of a sweep, in column order; `inversion.<name>` / `generation.<name>` axes follow.
DESIGN_AXES = ("qk", "v", "remove", "debias", "seed")
#: The base model as an axis (`axes: {preset: [...]}`): part of the variant, and the one column whose requested and
#: applied values are always the same (`preset` in every table).
PRESET_AXIS = "preset"
#: Axes that vary the sample but are not part of the variant (replicates / the checkpoint column).
NON_VARIANT_AXES = ("inversion.steps", "generation.seed")
#: The paper's qualitative ablation, (a)–(d): embedding designs, each embedding removed, the debias strategies.
SEED_GRID = {"qk": list(QK_DESIGNS), "v": list(V_DESIGNS), "remove": ["none", "qk", "v"],
             "debias": ["difference", "normalize", "none"], "seed": [0]}
#: The paper's full method (the default baseline of comparisons).
PAPER_METHOD = {"qk": "1d", "v": "2d", "debias": "difference"}

#: The step the official example generates from (of 400): appearance leaks in as inversion runs longer, so
#: by default both this step and the last are evaluated.
PAPER_CHECKPOINT = 250

APPLIED = "_applied"


def applied(column: str) -> str:
    """The name of the column holding the value that ran, for a requested-value column (see module doc)."""
    return column + APPLIED


def check_choice(what: str, value: str, choices: tuple[str, ...]) -> str:
    """`value` if it is one of `choices`, else a ValueError naming the accepted values."""
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; accepted: {', '.join(choices)}")
    return value


# ------------------------------------------------------------------------------------------- metrics
@dataclass(frozen=True)
class Metric:
    name: str          #: column name, the same in every table
    display: str       #: how tables and plots title it
    higher_is_better: bool
    per_sample: bool   #: a number per generated clip (else: computed over a group of clips)
    description: str

    @property
    def arrow(self) -> str:
        return "↑" if self.higher_is_better else "↓"


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("text_similarity", "Text similarity", True, True,
           "CLIP cosine between each generated frame and the edit prompt, mean over frames"),
    Metric("motion_fidelity", "Motion fidelity", True, True,
           "mean of the camera's motion (compared point by point of the frame) and the DMT score over the tracks "
           "moving relative to the scene (visible steps only)"),
    Metric("temporal_consistency", "Temporal consistency", True, True,
           "CLIP image cosine between consecutive generated frames, mean"),
    Metric("appearance_leakage", "Appearance leakage", False, True,
           "CLIP image cosine between generated and reference frames, mean (the reference's look leaking in)"),
    Metric("motion_fidelity_dmt", "Motion fidelity (DMT, all tracks)", True, True,
           "the published DMT score over every grid track"),
    Metric("motion_fidelity_two_way", "Motion fidelity (two-way)", True, True,
           "as motion_fidelity, with the mean of the row-wise and column-wise best matches of the DMT similarity "
           "matrix"),
    Metric("fid", "FID", False, False, "Fréchet distance of generated vs reference frame features"),
    Metric("kid", "KID", False, False, "kernel inception distance (unbiased MMD², cubic kernel)"),
    Metric("user_preference", "User preference", True, False,
           "Bradley–Terry probability of beating a variant drawn at random from the others compared (the share of "
           "forced-choice votes it would win meeting each equally often)"),
)}
#: The metrics a scorer computes for one clip, in table column order.
SAMPLE_METRICS = tuple(name for name, m in METRICS.items() if m.per_sample)
#: The paper's Table 1 columns, in its order.
PAPER_COLUMNS = ("text_similarity", "motion_fidelity", "temporal_consistency", "fid", "user_preference")


def objective_value(metrics: dict, objective: dict) -> float:
    """A search's objective (`{metric, mode, penalty: {other: weight}}`): metric ± Σ weight·other, each penalty
    counted in its metric's bad direction; the worst value when a metric is missing or not finite (every
    generation failed), so a scheduler stops the sample rather than keep it."""
    sign = 1.0 if objective["mode"] == "max" else -1.0
    value = metrics.get(objective["metric"])
    if value is None or not math.isfinite(value):
        return -sign * math.inf
    for name, weight in objective.get("penalty", {}).items():
        other = metrics.get(name)
        if other is None or not math.isfinite(other):
            return -sign * math.inf
        goodness = other if METRICS[name].higher_is_better else -other
        value += sign * weight * goodness
    return float(value)


def objective_formula(objective: dict) -> str:
    """The objective as `objective_value` computes it, e.g. "max motion_fidelity − 0.5·appearance_leakage"."""
    mode = objective.get("mode") or "max"
    text = f"{mode} {objective['metric']}"
    for name, weight in (objective.get("penalty") or {}).items():
        higher_is_better = METRICS[name].higher_is_better if name in METRICS else True
        plus = (mode == "max") == higher_is_better  # objective_value adds sign·weight·goodness
        text += f" {'+' if plus else '−'} {weight:g}·{name}"
    return text


# ------------------------------------------------------------------------------------------- presets
#: Where the toy world's trained weights ship (package data of `model`, beside the code that loads them; built by
#: `python -m toyworld build`): pipeline/ (the toy preset's diffusers pipeline) and clip/ (its open_clip CLIP).
TOY_WORLD_DIR = Path(__file__).resolve().parent / "model" / "toy_world"


def cache_dir() -> Path:
    """This machine's cache (the tiny preset's weights, fetched reference videos, video probes):
    MOTION_SWEEP_CACHE, else ~/.cache/motion-sweep."""
    return Path(os.environ.get("MOTION_SWEEP_CACHE", Path.home() / ".cache" / "motion-sweep"))



@dataclass(frozen=True)
class Preset:
    """A base model plus the resolution it works at and the metric backbones that suit it."""

    name: str
    model: str  #: hub id or local directory holding a diffusers TextToVideoSDPipeline ("" = built locally)
    num_frames: int
    height: int
    width: int
    fps: int
    clip: str  #: evaluation backbone, "model" or "model/pretrained_tag"
    tracker: str
    description: str
    revision: Optional[str] = None  #: hub revision (commit) the weights are pinned to
    #: a UNet loaded in place of the pipeline's own (hub id or local dir; None = the pipeline's), and its commit
    unet: Optional[str] = None
    unet_revision: Optional[str] = None

    def with_model(self, model: Optional[str]) -> "Preset":
        """The same preset loading its weights from another place (a local copy of the hub repo)."""
        return self if model is None else replace(self, model=str(model), revision=None)


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset(name="zeroscope", model="cerspense/zeroscope_v2_576w", num_frames=24, height=320, width=576, fps=8,
           clip="ViT-B-32/laion2b_s34b_b79k", tracker="cotracker3",
           description="the paper's setting: ZeroScope v2 576w, 24 frames at 320x576",
           # the hub commit of cerspense/zeroscope_v2_576w's published weights (what `hf download` fetches as
           # snapshots/<commit>); a new upload to the repo changes no sweep until this line changes
           revision="6963642a64dbefa93663d1ecebb4ceda2d9ecb28"),
    # The official code's other two base models (its config: "unet can be either 'videoCrafter2' or
    # 'zeroscope_v2_576w', the former produces better video quality"). Same UNet3D block types as ZeroScope.
    Preset(name="modelscope", model="damo-vilab/text-to-video-ms-1.7b", num_frames=16, height=256, width=256, fps=8,
           clip="ViT-B-32/laion2b_s34b_b79k", tracker="cotracker3",
           description="ModelScope text-to-video 1.7B (ZeroScope's parent), 16 frames at 256x256",
           revision="338683c3175cde59b407a699af8fe68f4a2b8f74"),
    Preset(name="videocrafter2", model="cerspense/zeroscope_v2_576w", num_frames=16, height=320, width=512, fps=8,
           clip="ViT-B-32/laion2b_s34b_b79k", tracker="cotracker3",
           description="VideoCrafter2's UNet (diffusers conversion) in ZeroScope's pipeline, as the official code "
                       "loads it; 16 frames at 320x512",
           revision="6963642a64dbefa93663d1ecebb4ceda2d9ecb28",
           unet="adamdad/videocrafterv2_diffusers", unet_revision=None),
    Preset(name="tiny", model="", num_frames=8, height=64, width=64, fps=8, clip="ViT-S-32", tracker="lk",
           description="seeded random toy model with ZeroScope's block types (offline plumbing tests)"),
    # model "" = the pipeline shipped in TOY_WORLD_DIR (model.presets resolves it, so keys name no local path);
    # the clip is the toy CLIP shipped beside it, as an open_clip local folder
    Preset(name="toy", model="", num_frames=8, height=64, width=64, fps=8, clip=f"local-dir:{TOY_WORLD_DIR / 'clip'}",
           tracker="lk",
           description="text-to-video model and CLIP trained on moving shapes (shipped weights; the demo's "
                       "default, where motion inversion measurably works)"),
)}


# ------------------------------------------------------------------------------------------- GPU types
@dataclass(frozen=True)
class GpuType:
    """A GPU a trial may run on, for the cost model (`model.cost`): usable memory and dense peak throughput."""

    name: str
    memory_gib: float  #: what a process can allocate: the total nvidia-smi reports, in GiB (CUDA context not taken off)
    peak_tflops: dict  #: dense (no sparsity) peak per precision: "fp16", "bf16" (tensor cores), "fp32" (CUDA cores)
    description: str


# Sources (vendor datasheets, dense figures, i.e. half of the "with sparsity" numbers; fp32 = non-tensor FP32, what
# torch runs fp32 matmuls on by default since TF32 matmul is off): NVIDIA A10 datasheet (A10G is AWS's A10 variant,
# same GA102 chip and tensor-core rates; AWS quotes no separate figure, so its real clocks may make it ~10-20 %
# slower), NVIDIA T4, L4, L40S, A100 (40/80 GB SXM) and H100 SXM datasheets. Memory: nvidia-smi totals
# (e.g. A10G 23028 MiB, A100-80GB 81920 MiB, H100 81559 MiB).
GPU_TYPES: dict[str, GpuType] = {g.name: g for g in (
    GpuType("T4", 15.0, {"fp16": 65.0, "bf16": 0.0, "fp32": 8.1}, "NVIDIA T4 16 GB (AWS g4dn); no bf16"),
    GpuType("A10G", 22.49, {"fp16": 125.0, "bf16": 125.0, "fp32": 31.2}, "NVIDIA A10G 24 GB (AWS g5)"),
    GpuType("L4", 22.49, {"fp16": 121.0, "bf16": 121.0, "fp32": 30.3}, "NVIDIA L4 24 GB (AWS g6)"),
    GpuType("L40S", 44.99, {"fp16": 362.0, "bf16": 362.0, "fp32": 91.6}, "NVIDIA L40S 48 GB (AWS g6e)"),
    GpuType("A100-40GB", 40.0, {"fp16": 312.0, "bf16": 312.0, "fp32": 19.5}, "NVIDIA A100 SXM4 40 GB (AWS p4d)"),
    GpuType("A100-80GB", 80.0, {"fp16": 312.0, "bf16": 312.0, "fp32": 19.5}, "NVIDIA A100 SXM4 80 GB (AWS p4de)"),
    GpuType("H100-80GB", 79.65, {"fp16": 989.0, "bf16": 989.0, "fp32": 67.0}, "NVIDIA H100 SXM5 80 GB (AWS p5)"),
)}
