"""The toy world: a tiny text-to-video model and a tiny CLIP, trained by the project on flat shapes moving on plain
backgrounds; the demo's default and the positive control of the whole pipeline. Its weights ship in
`model/toy_world/` (`vocabulary.TOY_WORLD_DIR`), where the `toy` preset loads them; this package builds and
measures them (`python -m toyworld build|eval`; how the shipped world came to be: NOTES.md).

    data          the clips: shapes, colours, motions, captions, frames, reference clips (numpy only)
    architecture  the models' configs and builders, the pipeline, the method's settings there, a built world's files
    buildlog      a build's JSON log, its progress lines and its markdown report
    judge         what a clip shows (toy-CLIP classes, LK motion) and whether a model follows its prompts
    transfer      whether the method transfers a reference's motion to another subject
    measurement   a built world measured as users load it (the end of a build, `python -m toyworld eval`)
    train         what a build trains (BuildConfig) and the VAE, CLIP and UNet phases
    builder       a whole build: the phases in order (cached), the final measurement, written atomically
    __main__      the command line
"""

from .architecture import CLIP_DIR, PIPELINE_DIR, TOY_CLIP, make_pipeline
from .builder import build
from .judge import ToyJudge, motion_text_dependence
from .measurement import measure, toy_scorer
from .train import BuildConfig
from .transfer import transfer_check, transfer_trial

__all__ = ["BuildConfig", "CLIP_DIR", "PIPELINE_DIR", "TOY_CLIP", "ToyJudge", "build", "make_pipeline", "measure",
           "motion_text_dependence", "toy_scorer", "transfer_check", "transfer_trial"]
