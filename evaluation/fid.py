"""FID and KID from stored per-sample features: the one implementation (numpy only; the Inception extractor
that makes features is `evaluation.inception`).

FID/KID describe distributions, not samples: the scorer stores feature vectors of each generated clip's
frames, and any group of rows (a variant, a checkpoint) is compared with a reference frame set later, from
the stored vectors alone. numpy/scipy in float64, no torch; tests/test_evaluation/test_fid.py checks both against
torchmetrics' public `FrechetInceptionDistance` / `KernelInceptionDistance` fed the same features.

FID = ||mu_a - mu_b||² + Tr(S_a) + Tr(S_b) - 2 Tr((S_a S_b)^½). The last trace is computed exactly, with
no matrix square root: with centred features Xa [Na, D], Xb [Nb, D], S_a = Xa'Xa/(Na-1) and the
eigenvalues of S_a S_b are the squared singular values of Xa Xb' / sqrt((Na-1)(Nb-1)), so the trace is
that matrix's nuclear norm. Thin QR factors (Xa = Qa Ra) shrink it to the singular values of Ra Rb',
at most min(N, D) square: exact and cheap whether N < D (few frames) or N > D.
KID is the unbiased MMD² with the cubic kernel k(x, y) = (x·y / D + 1)³, averaged over random subsets
(as torchmetrics' `poly_mmd`); when neither set has more rows than the subset size, random subsets would all be
the whole sets (a std of 0 for 100 times the work), so KID is then one whole-set estimate without a std.
Values depend on the feature extractor: Inception FIDs are comparable with the paper's (its 550–700 use
few frames), CLIP-feature FIDs are on another scale. With fewer frames than feature dimensions the
covariances are singular and FID is strongly biased: read KID there (the report marks such FIDs).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from .config import EvaluationError


def _features(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if x.ndim != 2:
        raise EvaluationError(f"{name} features must be a 2-D array [N, D], got shape {x.shape}")
    if x.shape[0] < 2:
        raise EvaluationError(f"{name} features have {x.shape[0]} row(s); FID/KID need at least 2 samples")
    if not np.isfinite(x).all():
        raise EvaluationError(f"{name} features contain NaN/inf")
    return x


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = _features(a, "first"), _features(b, "second")
    if a.shape[1] != b.shape[1]:
        raise EvaluationError(f"feature sizes differ: {a.shape[1]} vs {b.shape[1]} (different extractors?)")
    return a, b


def fid_from_features(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between feature sets a [N, D] and b [M, D] (same D, N, M >= 2), float64.

    Exact for any N, M, D (see the module doc); biased upward for small sets, strongly so when N < D:
    compare FIDs only at equal set sizes.
    """
    a, b = _pair(a, b)
    xa, xb = a - a.mean(0), b - b.mean(0)
    ra = np.linalg.qr(xa, mode="r")  # [min(N, D), D]: xa'xa = ra'ra
    rb = np.linalg.qr(xb, mode="r")
    scale = np.sqrt((len(a) - 1) * (len(b) - 1))
    trace_sqrt = np.linalg.svd(ra @ rb.T, compute_uv=False).sum() / scale
    mean_term = float(((a.mean(0) - b.mean(0)) ** 2).sum())
    value = mean_term + (ra ** 2).sum() / (len(a) - 1) + (rb ** 2).sum() / (len(b) - 1) - 2.0 * trace_sqrt
    if not np.isfinite(value):
        raise EvaluationError("FID is not finite for these features")
    return max(float(value), 0.0)  # an exact 0 can come out as -1e-12


def _poly_mmd(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² of sets x [m, D] and y [n, D] with the cubic kernel (x·y / D + 1)³ (torchmetrics' `poly_mmd`
    when m = n)."""
    m, n, d = len(x), len(y), x.shape[1]
    kxx, kyy, kxy = ((x @ x.T) / d + 1) ** 3, ((y @ y.T) / d + 1) ** 3, ((x @ y.T) / d + 1) ** 3
    within = (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(within - 2.0 * kxy.sum() / (m * n))


def kid_from_features(a: np.ndarray, b: np.ndarray, subset_size: int = 1000, subsets: int = 100,
                      seed: int = 0) -> tuple[float, Optional[float]]:
    """KID (mean, std over `subsets` random subsets) between feature sets a [N, D] and b [M, D].

    As torchmetrics' KernelInceptionDistance: each subset draws `subset_size` rows of each set without
    replacement and takes the unbiased MMD² with the cubic polynomial kernel. Seeded, so the same features
    give the same numbers. Where torchmetrics refuses a subset size larger than a set:
    * neither set has more than subset_size rows: subsets could only repeat the whole sets, so the answer is
      one unbiased MMD² of the whole sets (N and M rows, all the data) and the std is None;
    * only the other set does: subsets of min(N, M) rows, the smaller set whole each time (the std then
      measures the larger set's subsampling only).
    """
    a, b = _pair(a, b)
    if subsets < 1 or subset_size < 2:
        raise EvaluationError(f"KID needs subsets >= 1 and subset_size >= 2, got {subsets}, {subset_size}")
    if max(len(a), len(b)) <= subset_size:
        return _poly_mmd(a, b), None
    m = min(subset_size, len(a), len(b))
    rng = np.random.default_rng(seed)
    values = np.array([_poly_mmd(a[rng.permutation(len(a))[:m]], b[rng.permutation(len(b))[:m]])
                       for _ in range(subsets)])
    return float(values.mean()), float(values.std())
