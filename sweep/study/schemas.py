"""What the study's tables hold: the votes table (one row per vote) and the result tables of its statistics.

Every column carries a "doc" (`sweep.results.schemas.doc_field`); `describe_votes()` lists the votes table's.
"""

from __future__ import annotations

import pyarrow as pa

from sweep.results.schemas import doc_field

_timestamp = pa.timestamp("us", tz="UTC")


VOTES_SCHEMA = pa.schema([
    doc_field("sweep", pa.string(), "sweep name"),
    doc_field("study", pa.string(), "study name (`motion-sweep study create NAME`)"),
    doc_field("item", pa.string(), "study item id (one video, prompt, generation seed and pair of variants)"),
    doc_field("repeat", pa.bool_(), "true: the item's second showing to this rater, sides swapped (consistency)"),
    doc_field("rater", pa.string(), "rater id (r001...; never the link token), or the id given by an import"),
    doc_field("question", pa.string(), "question id (the study's `questions`)"),
    doc_field("question_text", pa.string(), "the question as the rater read it"),
    doc_field("left_variant", pa.string(), "variant shown as Video 1 (left; top on a phone)"),
    doc_field("right_variant", pa.string(), "variant shown as Video 2 (right; bottom on a phone)"),
    doc_field("choice", pa.string(), "left | right: the side chosen"),
    doc_field("chosen_variant", pa.string(), "the variant chosen (left_variant or right_variant)"),
    doc_field("response_ms", pa.int64(), "milliseconds from the question being shown (clips loaded) to the answer"),
    doc_field("time", _timestamp, "when the vote was received (UTC)"),
    doc_field("video", pa.string(), "reference video id of the item"),
    doc_field("prompt", pa.string(), "edit prompt of the item"),
    doc_field("generation_seed", pa.int64(), "generation seed of the item's clips"),
    doc_field("source", pa.string(), "server (the study page) | import:<file name> (`study import`)"),
    doc_field("code_version", pa.string(), "motion-sweep package version that wrote the row"),
])

PAIRS_SCHEMA = pa.schema([
    doc_field("study", pa.string(), "study name"),
    doc_field("question", pa.string(), "question id"),
    doc_field("variant_a", pa.string(), "first variant of the pair (the --compare order)"),
    doc_field("variant_b", pa.string(), "second variant of the pair"),
    doc_field("n_votes", pa.int64(), "votes on the pair (first presentations; repeats excluded)"),
    doc_field("wins_a", pa.int64(), "votes for variant_a"),
    doc_field("wins_b", pa.int64(), "votes for variant_b"),
    doc_field("win_rate_a", pa.float64(), "wins_a / n_votes"),
    doc_field("ci_low", pa.float64(), "lower end of the 95% interval of win_rate_a with raters as the unit: Wilson's "
                                      "at n_votes / design_effect, t quantile on n_raters − 1 df (null: < 2 raters)"),
    doc_field("ci_high", pa.float64(), "upper end of that interval"),
    doc_field("p", pa.float64(), "two-sided test of win_rate_a = 1/2 with raters as the unit: the score test with the "
                                 "Rao–Scott design-effect correction, t on n_raters − 1 df (the interval's dual)"),
    doc_field("design_effect", pa.float64(), "variance of win_rate_a clustered by rater over the binomial variance "
                                             "(independent votes), floored at 1; n_votes / design_effect votes' "
                                             "worth of information"),
    doc_field("n_raters", pa.int64(), "raters who voted on the pair"),
    doc_field("n_items", pa.int64(), "items of the pair with a vote"),
    doc_field("method", pa.string(), "interval and test method"),
])

BRADLEY_TERRY_SCHEMA = pa.schema([
    doc_field("study", pa.string(), "study name"),
    doc_field("question", pa.string(), "question id"),
    doc_field("variant", pa.string(), "variant"),
    doc_field("log_strength", pa.float64(), "Bradley–Terry log-strength θ (mean 0 over the component's variants; "
                                         "0.5 pseudo-wins each way per compared pair): P(i beats j) = 1 / (1 + "
                                         "exp(θj − θi))"),
    doc_field("ci_low", pa.float64(), "lower end of θ's 95% interval (`method`: rater-clustered sandwich, or bootstrap "
                                      "over raters); −inf for a variant that never won (null: < 2 raters)"),
    doc_field("ci_high", pa.float64(), "upper end; +inf for a variant that never lost (one-sided: the other end is "
                                       "a profile-likelihood bound)"),
    doc_field("strength", pa.float64(), "exp(θ): strengths with geometric mean 1"),
    doc_field("n_votes", pa.int64(), "votes on pairs containing the variant"),
    doc_field("n_wins", pa.int64(), "votes won"),
    doc_field("component", pa.int64(), "connected component of the compared pairs (0, 1, ...): θ is fitted and "
                                       "centred per component; values of two components are not comparable"),
    doc_field("method", pa.string(), "fit and interval method"),
])

CONSISTENCY_SCHEMA = pa.schema([
    doc_field("study", pa.string(), "study name"),
    doc_field("rater", pa.string(), "rater id, or 'all'"),
    doc_field("question", pa.string(), "question id, or 'all'"),
    doc_field("n_repeated", pa.int64(), "answers given on both showings of a repeated item"),
    doc_field("n_consistent", pa.int64(), "of those, the same variant chosen both times (sides un-swapped)"),
    doc_field("consistency", pa.float64(), "n_consistent / n_repeated (null when 0)"),
])

ITEMS_SCHEMA = pa.schema([
    doc_field("study", pa.string(), "study name"),
    doc_field("item", pa.string(), "item id"),
    doc_field("variant_a", pa.string(), "first variant of the item's pair"),
    doc_field("variant_b", pa.string(), "second variant"),
    doc_field("video", pa.string(), "reference video id"),
    doc_field("prompt", pa.string(), "edit prompt"),
    doc_field("generation_seed", pa.int64(), "generation seed"),
    doc_field("n_votes", pa.int64(), "votes on the item (first presentations, every question)"),
    doc_field("n_raters", pa.int64(), "raters who voted on it"),
    doc_field("n_repeat_votes", pa.int64(), "votes on its repeated presentations"),
])

USER_PREFERENCE_SCHEMA = pa.schema([
    doc_field("variant", pa.string(), "variant (join key with the samples/summary tables)"),
    doc_field("user_preference", pa.float64(), "Bradley–Terry probability of beating a variant drawn at random from "
                                               "the others of its component: the share of votes it would win had it "
                                               "met each equally often (vocabulary.METRICS)"),
    doc_field("n_votes", pa.int64(), "forced-choice votes on pairs containing the variant (first presentations)"),
    doc_field("n_wins", pa.int64(), "votes won"),
    doc_field("ci_low", pa.float64(), "lower end of the 95% interval of user_preference (rater-clustered sandwich, "
                                      "logit scale, t on raters − 1 df; 0 for a variant that never won, whose upper "
                                      "end is a profile-likelihood bound); null: < 2 raters"),
    doc_field("ci_high", pa.float64(), "upper end of that interval (1 for a variant that never lost)"),
    doc_field("n_raters", pa.int64(), "raters who voted on it"),
    doc_field("questions", pa.string(), "question ids pooled (comma-separated)"),
    doc_field("studies", pa.string(), "studies pooled (comma-separated)"),
    doc_field("checkpoint", pa.int64(), "checkpoint step its clips were shown at (study.json items' checkpoints; "
                                        "null: not given)"),
    doc_field("component", pa.int64(), "connected component of the compared pairs: values are on one scale only "
                                       "within a component"),
    doc_field("method", pa.string(), "estimate and interval method"),
])

RESULT_SCHEMAS = {"pairs": PAIRS_SCHEMA, "bradley_terry": BRADLEY_TERRY_SCHEMA, "consistency": CONSISTENCY_SCHEMA,
                  "items": ITEMS_SCHEMA, "user_preference": USER_PREFERENCE_SCHEMA}


def describe_votes() -> dict[str, str]:
    """{column: what it holds} of the votes table."""
    return {f.name: f.metadata[b"doc"].decode() for f in VOTES_SCHEMA}
