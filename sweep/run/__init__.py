"""Running a sweep: from a spec to rows in the store.

    videos.py     the reference videos as files: content hashes, a node's local copy, the probe before Ray
    plan.py       spec -> grid points, canonical variants, trials, content keys (pure)
    gpu_budget.py a plan's predicted GPU memory and seconds per trial and GPU type (model.cost), fit warnings
    workers.py    what a worker process loads once: the pipeline, the scorer
    artefacts.py  what a trial computes once for everyone: DDIM inversions, FID reference features
    trial.py      one trial without Ray: optimise, generate and score at each checkpoint, write rows
    search.py     a spec's `search:` as Tune's searcher and ASHA, a sample as trials, the search summary
    tune.py       Tune's side: the trainables, the config Tune sees, callbacks, ResultGrid
    preflight.py  Ray started and checked before the first trial
    runner.py     run_sweep: the one place that builds the Tuner
"""
