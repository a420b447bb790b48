"""What each rater sees: the order of the items, the side of each variant, the repeats, and opaque media ids.

Each rater sees every item (or --per-rater of them), in an order and with sides drawn from the study's secret
and the rater's id, plus --repeats of them again later with the sides swapped (rater consistency). Raters never
see variant names: the page gets "left"/"right" and opaque media URLs; the server fills the variants into the vote.
"""

from __future__ import annotations

import hashlib
import hmac
import random
from dataclasses import dataclass

@dataclass(frozen=True)
class Presentation:
    """One showing of an item to a rater."""

    item: str
    repeat: bool
    left: str   #: variant shown as Video 1
    right: str  #: variant shown as Video 2


def _rng(study: dict, *parts: str) -> random.Random:
    digest = hmac.new(study["secret"].encode(), ":".join(parts).encode(), hashlib.sha256).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def rater_schedule(study: dict, rater: str, rater_index: int = 0) -> list[Presentation]:
    """The rater's presentations in order: its items shuffled, each side drawn at random, then `repeats` of them
    again (at random later positions, at least 3 presentations after the first showing when possible) with the
    sides swapped. Deterministic per (study secret, rater id)."""
    items = study["items"]
    rng = _rng(study, "schedule", rater)
    if study.get("per_rater"):
        order = list(range(len(items)))
        _rng(study, "per-rater").shuffle(order)  # one study-wide order; rater k takes the next slice
        m = int(study["per_rater"])
        chosen = [items[order[(rater_index * m + j) % len(items)]] for j in range(m)]
    else:
        chosen = list(items)
    rng.shuffle(chosen)
    seq = []
    for it in chosen:
        a, b = it["pair"]
        seq.append(Presentation(it["id"], False, *((b, a) if rng.random() < 0.5 else (a, b))))
    k = min(int(study.get("repeats", 0)), len(seq))
    eligible = seq[:len(seq) - 3] if len(seq) - 3 >= k else list(seq)  # room for 3 others before the repeat
    for first in rng.sample(eligible, k):
        pos = seq.index(first)
        lo = min(pos + 4, len(seq))
        seq.insert(rng.randint(lo, len(seq)), Presentation(first.item, True, first.right, first.left))
    return seq


def media_id(study: dict, rater: str, path: str) -> str:
    """The id of a clip in this rater's media URLs: opaque (nothing to guess a variant or file from) and per rater."""
    return hmac.new(study["secret"].encode(), f"media:{rater}:{path}".encode(), hashlib.sha256).hexdigest()[:20]
