"""The method's settings and their defaults, written once (docs/method.md §2–3): the reference video's preparation,
the optimisation of the embeddings, and generation.

Plain frozen dataclasses, no torch: the CLI's flags, the sweep spec's `inversion:`/`generation:` blocks and the
planner take their defaults from here and build these objects; `model.inversion`/`model.generation` run them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from vocabulary import LOSSES, NOISE_INITS, OFF, PAPER_CHECKPOINT, PAPER_METHOD, QK_DESIGNS, V_DESIGNS, check_choice

#: Where the embeddings go: the paper's [down,1280] and [up,1280] levels.
DEFAULT_PLACEMENT = ("down_blocks.2", "up_blocks.1")
#: Frame slots reserved per embedding (the public code's 32); the first N are used.
DEFAULT_SLOTS = 32
#: Mixed precision of the optimisation (accelerate's names; "auto": the UNet's half dtype if it has one, else
#: fp16 autocast on CUDA and none on CPU).
PRECISIONS = ("auto", "no", "fp16", "bf16")


def check_design(qk: str, v: str, placement: tuple[str, ...], slots: int) -> None:
    """ValueError unless the embeddings' designs, placement and slots make sense (naming what is accepted)."""
    check_choice("MQK design (qk)", qk, (*QK_DESIGNS, OFF))
    check_choice("MV design (v)", v, (*V_DESIGNS, OFF))
    if not placement:
        raise ValueError("placement is empty; name at least one block, e.g. down_blocks.2")
    if slots < 1:
        raise ValueError(f"slots must be >= 1, got {slots}")


@dataclass(frozen=True)
class ReferenceConfig:
    """How a reference video becomes the model's input: `frames` frames from `start`, every `stride`, resized and
    centre-cropped to height×width (None: the preset's), VAE-encoded, then DDIM-inverted in `ddim_steps` steps."""

    frames: Optional[int] = None
    start: int = 0
    stride: int = 1
    height: Optional[int] = None
    width: Optional[int] = None
    ddim_steps: int = 50


@dataclass(frozen=True)
class InversionConfig:
    """The optimisation's hyperparameters (paper defaults).

    `checkpoints` are the steps at which a copy of the embeddings is kept besides the last step (always kept).
    Left empty it means the paper default: (250,) for a run of at least 250 steps, else () — so a 400-step
    inversion keeps steps 250 and 400. To keep only the last step, give it: `checkpoints=(steps,)`.
    `precision` is the mixed precision `accelerate` runs the loop in (see `PRECISIONS`); `checkpointing` switches
    activation checkpointing (None: on for CUDA, off on the CPU; `model.cost` predicts either).
    """

    qk: str = PAPER_METHOD["qk"]
    v: str = PAPER_METHOD["v"]
    placement: tuple[str, ...] = DEFAULT_PLACEMENT
    slots: int = DEFAULT_SLOTS
    steps: int = 400
    lr: float = 0.02
    weight_decay: float = 0.01
    loss: str = "base"
    checkpoints: tuple[int, ...] = ()  # () = paper default (250,) when steps >= 250; the last step is always kept
    seed: int = 0
    precision: str = "auto"
    #: activation checkpointing of the UNet's 3D blocks: None = on for CUDA, off on the CPU (where memory is plenty)
    checkpointing: Optional[bool] = None

    def __post_init__(self):
        check_design(self.qk, self.v, self.placement, self.slots)
        check_choice("loss", self.loss, LOSSES)
        check_choice("precision", self.precision, PRECISIONS)
        object.__setattr__(self, "placement", tuple(self.placement))
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        checkpoints = tuple(sorted({int(c) for c in self.checkpoints}))
        if not checkpoints:
            checkpoints = (PAPER_CHECKPOINT,) if self.steps >= PAPER_CHECKPOINT else ()
        object.__setattr__(self, "checkpoints", checkpoints)
        bad = [c for c in self.checkpoints if not 0 < c <= self.steps]
        if bad:
            raise ValueError(f"checkpoints {bad} are outside 1..steps={self.steps}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")

    @property
    def saved_steps(self) -> tuple[int, ...]:
        return tuple(sorted(set(self.checkpoints) | {self.steps}))


@dataclass(frozen=True)
class GenerationConfig:
    """DDIM sampling of new videos (the paper's: 30 steps, guidance 12, negative prompt "", BlendInit p = 0.5).
    `noise_prior` is BlendInit's p; it means nothing for `noise_init="random"` (None there)."""

    steps: int = 30
    guidance: float = 12.0
    noise_init: str = "blend"
    noise_prior: Optional[float] = 0.5
    negative_prompt: str = ""
    batch_size: int = 4  # videos per pipeline call (×2 with classifier-free guidance)

    def __post_init__(self):
        check_choice("noise_init", self.noise_init, NOISE_INITS)
        if self.noise_init == "blend" and not (self.noise_prior is not None and 0.0 <= self.noise_prior <= 1.0):
            raise ValueError(f"noise_prior must be in [0, 1], got {self.noise_prior}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be >= 1, got {self.steps}, {self.batch_size}")
