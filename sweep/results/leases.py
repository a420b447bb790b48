"""Leases: one computation of a content key across concurrent sweeps on one storage.

A sweep that needs an artefact nobody has stored yet (a video's DDIM inversion, an inversion's embeddings) takes
the key's lease and computes it; every other sweep that needs it waits until it is stored, or until the lease
expires (its holder died) and takes it over. A lease is a numbered file under `store/leases/<key>/`, created
exclusively (`Store.create_bytes_exclusive`: a hard link locally, a conditional put on S3), so of two sweeps
that race for number n+1 exactly one gets it.

A lease may name its `owner`, the computation it belongs to across attempts (a sweep's trial: its retry after
its worker died, or its continuation after a killed driver's run is resumed). A holder with the same owner
takes a live lease over at once: the earlier attempt is dead (a sweep runs one attempt of a trial at a time),
so waiting out its time to live would only idle the GPU. Other sweeps still wait. (Should an earlier attempt
still be alive, both compute the same content: duplicate work, never wrong rows.)

    lease = wait_or_lease(store, key, done=lambda: store.exists(result))
    if lease is not None:      # ours to compute (kept alive from a background thread)
        try: ...compute and store...
        finally: lease.release()
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from typing import Callable, Optional

from .store import STORE_DIR, Store, dumps

#: A lease lives this long unless its holder renews it (every third of it, from a background thread); a sweep
#: whose holder died waits at most this long before taking the computation over.
LEASE_TTL_S = 120.0
LEASE_POLL_S = 2.0


def lease_dir(key: str) -> str:
    return f"{STORE_DIR}/leases/{key}"


class Lease:
    """A held lease on a store key: `renew()` pushes its expiry on (a new numbered file), `release()` ends it.
    `keep_alive()` renews it from a background thread every third of its time to live, until released."""

    def __init__(self, store: Store, key: str, holder: str, ttl_s: float, number: int, owner: Optional[str] = None):
        self.store, self.key, self.holder, self.ttl_s, self.number = store, key, holder, ttl_s, number
        self.owner = owner
        self._stop: Optional[threading.Event] = None

    def _rel(self, number: int) -> str:
        return f"{lease_dir(self.key)}/{number:08d}.json"

    def _create(self) -> Optional["Lease"]:
        body = dumps({"holder": self.holder, "owner": self.owner, "expires": time.time() + self.ttl_s,
                      "ttl_s": self.ttl_s}).encode()
        try:
            self.store.create_bytes_exclusive(self._rel(self.number), body)
        except FileExistsError:  # another sweep created this number first: it holds the lease
            return None
        return self

    def renew(self) -> bool:
        """Extend the lease; False if it was lost (another sweep took it over after it expired)."""
        nxt = Lease(self.store, self.key, self.holder, self.ttl_s, self.number + 1, self.owner)._create()
        if nxt is None:
            return False
        self.store.delete(self._rel(self.number))
        self.number = nxt.number
        return True

    def keep_alive(self) -> "Lease":
        self._stop = threading.Event()

        def loop():
            while not self._stop.wait(self.ttl_s / 3):
                try:
                    if not self.renew():
                        return
                except Exception:  # noqa: BLE001 - a failed renewal only risks duplicate work, never wrong rows
                    pass
        threading.Thread(target=loop, name=f"lease-{self.key}", daemon=True).start()
        return self

    def release(self) -> None:
        if self._stop is not None:
            self._stop.set()
        release_leases(self.store, self.key)


def acquire_lease(store: Store, key: str, holder: str, ttl_s: float, owner: Optional[str] = None) -> Optional[Lease]:
    """Take the lease on `key` (e.g. an inversion key) for `ttl_s` seconds, or None while another holder's
    lease on it is live (unless that holder has our `owner`: an earlier attempt of ours, taken over at once).
    The first sweep to create number n+1 holds it; an expired one (its holder died) is taken over by creating
    the next number, so two sweeps that both see it expire cannot both take it."""
    entries = store.list_files(lease_dir(key), suffix=".json")
    latest = max(entries, key=lambda e: e.name, default=None)
    if latest is not None:
        current = store.read_json(f"{lease_dir(key)}/{latest.name}") or {}
        ours = current.get("holder") == holder or (owner is not None and current.get("owner") == owner)
        if not ours and current.get("expires", 0) > time.time():
            return None
    number = int(latest.name.split(".")[0]) + 1 if latest is not None else 1
    return Lease(store, key, holder, ttl_s, number, owner)._create()


def release_leases(store: Store, key: str) -> None:
    """Remove a key's lease files (its result is stored; nobody needs to wait any more)."""
    for entry in store.list_files(lease_dir(key), suffix=".json"):
        store.delete(f"{lease_dir(key)}/{entry.name}")


def wait_or_lease(store: Store, key: str, done: Callable[[], bool], ttl_s: float = LEASE_TTL_S,
                  poll_s: float = LEASE_POLL_S, owner: Optional[str] = None) -> Optional[Lease]:
    """None once `done()` (the result is stored, by whoever computed it); else a held, kept-alive lease on `key`:
    this process computes it while any other sweep that needs it waits here. `owner`: see the module's doc."""
    holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    while not done():
        lease = acquire_lease(store, key, holder, ttl_s, owner)
        if lease is not None:
            if done():  # finished between the look and the lease
                lease.release()
                return None
            return lease.keep_alive()
        time.sleep(poll_s)
    return None
