"""Moved: the toy world's builder, judge and command line are the top-level `toyworld` package.

`import model.toy` fails with a message naming the new place; `python -m model.toy ...` exits with status 2 and
names `python -m toyworld ...`. The shipped weights stay in `model/toy_world/`, where the `toy` preset loads them.
"""

import sys

_MOVED = ("model.toy moved to the toyworld package: toyworld.architecture (configs, builders, PIPELINE_DIR, "
          "CLIP_DIR, TOY_CLIP), toyworld.train (BuildConfig, the phases), toyworld.builder (build), toyworld.judge "
          "(ToyJudge, motion measures), toyworld.transfer (transfer_trial, transfer_check), toyworld.measurement "
          "(measure, toy_scorer), toyworld.data (was model.toy_data); the command is `python -m toyworld build|eval`")

if __name__ == "__main__":
    print(f"python -m model.toy: {_MOVED}. Run `python -m toyworld {' '.join(sys.argv[1:]) or 'build'}` instead.",
          file=sys.stderr)
    sys.exit(2)
raise ImportError(_MOVED)
