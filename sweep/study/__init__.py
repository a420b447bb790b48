"""A user-preference study: two-alternative forced choice between variants of a sweep, served to raters.

    motion-sweep study create NAME --sweep PATH --compare VARIANT_A VARIANT_B [...] --raters 20
    motion-sweep study serve NAME --sweep PATH               # 127.0.0.1:8008; one link per rater
    motion-sweep study results NAME --sweep PATH

    schemas.py      what the votes table and the result tables hold
    definition.py   study.json and raters.json: items from a sweep's samples, questions, raters and their links
    schedule.py     what each rater sees: item order, sides, swapped repeats, opaque media ids
    votes.py        one Parquet part per vote (written exclusively: a second vote is refused), the votes table
    state.py        a study loaded for serving and importing: raters by token, schedules, vote validation
    vote_import.py  votes collected elsewhere (CSV, JSON, JSONL), validated, all or nothing
    server.py       the aiohttp server: the rater's page (page/), its session, votes, clips
    stats.py        rater-clustered win rates and tests, Bradley–Terry strengths, consistency, user_preference
    cli.py          `motion-sweep study ...` (`add_study_arguments`; `python -m sweep.study`)
"""

from .definition import (add_raters, create_study, list_studies, load_questions_file, load_raters, load_study,
                         rater_link)
from .schedule import Presentation, rater_schedule
from .schemas import RESULT_SCHEMAS, VOTES_SCHEMA, describe_votes
from .server import RunningServer, make_app, serve
from .state import StudyState, VoteError
from .stats import (bradley_terry, bradley_terry_fit, item_votes, pairwise, rater_consistency, study_results,
                    user_preference)
from .vote_import import import_votes
from .votes import load_votes, vote_row, write_vote

__all__ = ["Presentation", "RESULT_SCHEMAS", "RunningServer", "StudyState", "VOTES_SCHEMA", "VoteError", "add_raters",
           "bradley_terry", "bradley_terry_fit", "create_study", "describe_votes", "import_votes", "item_votes",
           "list_studies", "load_questions_file", "load_raters", "load_study", "load_votes", "make_app", "pairwise",
           "rater_consistency", "rater_link", "rater_schedule", "serve", "study_results", "user_preference",
           "vote_row", "write_vote"]
