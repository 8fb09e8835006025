"""Exact learning coefficients: deep linear networks, reduced-rank regression, normal crossings.

Results are ``fractions.Fraction`` values with their multiplicity.
"""

import itertools
from collections.abc import Sequence
from fractions import Fraction

import numpy as np

from llc._validation import check_count

__all__ = [
    "aoyagi_subset",
    "dln_hessian_rank",
    "dln_learning_coefficient",
    "dln_local_learning_coefficient",
    "dln_minimal_point",
    "normal_crossing_learning_coefficient",
    "product_rank",
    "rrr_learning_coefficient",
]


def dln_learning_coefficient(widths: Sequence[int], rank: int) -> tuple[Fraction, int]:
    """Aoyagi's learning coefficient of a bias-free deep linear network.

    Args:
        widths: ``[input, hidden..., output]`` (at least two entries, each >= 1); the
            network has ``len(widths) - 1`` weight matrices.
        rank: rank of the true end-to-end matrix, in ``0..min(widths)``.

    Returns:
        ``(lambda, multiplicity)``, lambda an exact :class:`fractions.Fraction`.

    Raises:
        ValueError: for widths < 1, fewer than two widths, or a rank out of range.

    Examples:
        >>> dln_learning_coefficient([10, 10, 10], 5)
        (Fraction(47, 1), 2)
        >>> dln_learning_coefficient([5, 5, 5, 5, 5], 0)
        (Fraction(8, 1), 4)
    """
    widths = [check_count("each width", h, minimum=1) for h in widths]
    if len(widths) < 2:
        msg = f"widths must list at least input and output sizes; got {widths}."
        raise ValueError(msg)
    rank = check_count("rank", rank, minimum=0)
    if rank > min(widths):
        msg = f"rank must be in 0..min(widths) = 0..{min(widths)}; got {rank}."
        raise ValueError(msg)
    deltas = [h - rank for h in widths]
    subset = aoyagi_subset(deltas)
    ell = len(subset) - 1
    s = sum(deltas[i] for i in subset)
    m_prime = -(-s // ell)  # ceil(s / ell)
    a = s - (m_prime - 1) * ell
    pairs = sum(deltas[i] * deltas[j] for i, j in itertools.combinations(subset, 2))
    lam = (
        Fraction(rank * (widths[0] + widths[-1]) - rank**2, 2)
        + Fraction(a * (ell - a), 4 * ell)
        - Fraction(ell * (ell - 1), 4) * Fraction(s, ell) ** 2
        + Fraction(pairs, 2)
    )
    return lam, a * (ell - a) + 1


def aoyagi_subset(deltas: list[int]) -> list[int]:
    """Indices of Aoyagi's set Sigma: the first sorted prefix (length >= 2) that fits."""
    order = sorted(range(len(deltas)), key=deltas.__getitem__)
    for size in range(2, len(deltas) + 1):
        inside, outside = order[:size], order[size:]
        ell = size - 1
        total = sum(deltas[i] for i in inside)
        top = max(deltas[i] for i in inside)
        if outside:
            low = min(deltas[k] for k in outside)
            if not (top < low and total < ell * low):
                continue
        if total >= ell * top:
            return inside
    msg = f"no valid subset for deltas {deltas} (this should not happen; please report)."
    raise RuntimeError(msg)


def rrr_learning_coefficient(M: int, H: int, N: int, r: int) -> tuple[Fraction, int]:
    """Reduced-rank regression ``y = B A x`` (Aoyagi & Watanabe 2005), exact.

    Args:
        M: input dimension.
        H: inner (hidden) dimension.
        N: output dimension.
        r: rank of the true matrix, in ``0..min(M, H, N)``.

    Returns:
        ``(lambda, multiplicity)``.

    Examples:
        >>> rrr_learning_coefficient(5, 3, 5, 0)
        (Fraction(13, 2), 2)
        >>> rrr_learning_coefficient(4, 3, 8, 0)
        (Fraction(6, 1), 1)
    """
    M, H, N = (check_count(k, v, minimum=1) for k, v in (("M", M), ("H", H), ("N", N)))
    r = check_count("r", r, minimum=0)
    if r > min(M, H, N):
        msg = f"r must be in 0..min(M, H, N) = 0..{min(M, H, N)}; got {r}."
        raise ValueError(msg)
    if M + N < H + r:
        return Fraction(M * N, 2), 1
    if M + H < N + r:
        return Fraction(H * M - H * r + N * r, 2), 1
    if N + H < M + r:
        return Fraction(H * N - H * r + M * r, 2), 1
    core = 2 * (H + r) * (M + N) - (M - N) ** 2 - (H + r) ** 2
    if (M + H + N + r) % 2 == 0:
        return Fraction(core, 8), 1
    return Fraction(core + 1, 8), 2


def normal_crossing_learning_coefficient(
    k: Sequence[int], h: Sequence[int] | None = None
) -> tuple[Fraction, int]:
    """``K(w) = prod_j w_j^(2 k_j)`` with prior ``prod_j |w_j|^(h_j)`` near 0.

    ``lambda = min over j with k_j > 0 of (h_j + 1) / (2 k_j)``; the multiplicity counts
    the j attaining it.

    Args:
        k: exponents ``k_j >= 0``, at least one positive.
        h: prior exponents ``h_j >= 0`` (default all 0: a prior positive at 0).

    Returns:
        ``(lambda, multiplicity)``.

    Examples:
        >>> normal_crossing_learning_coefficient([1, 2])
        (Fraction(1, 4), 1)
        >>> normal_crossing_learning_coefficient([3, 1], h=[1, 1])
        (Fraction(1, 3), 1)
    """
    k = [check_count("each k_j", v, minimum=0) for v in k]
    h = [0] * len(k) if h is None else [check_count("each h_j", v, minimum=0) for v in h]
    if len(h) != len(k):
        msg = f"h must have one entry per entry of k ({len(k)}); got {len(h)}."
        raise ValueError(msg)
    ratios = [Fraction(hj + 1, 2 * kj) for kj, hj in zip(k, h, strict=True) if kj > 0]
    if not ratios:
        msg = f"at least one k_j must be positive; got k = {k}."
        raise ValueError(msg)
    lam = min(ratios)
    return lam, ratios.count(lam)


def product_rank(matrices: Sequence, rtol: float = 1e-5) -> int:
    """Rank of ``matrices[0] @ matrices[1] @ ...``, robust to ill-conditioned products.

    Tracks an orthonormal basis of the row space as it passes through each factor (in
    float64), thresholding singular values relative to the largest at every factor,
    so a deep product's tiny but nonzero singular values are not mistaken for zeros.

    Args:
        matrices: factors of shapes ``(h0, h1), (h1, h2), ...`` (``x @ W`` convention).
        rtol: relative singular-value threshold per factor.

    Returns:
        The rank of the product.

    Examples:
        >>> import numpy as np
        >>> a = np.outer(np.arange(1.0, 4.0), np.ones(3))
        >>> product_rank([np.eye(3), a, np.eye(3)])
        1
    """
    basis = np.eye(np.shape(matrices[0])[0])
    for w in matrices:
        image = basis @ np.asarray(w, np.float64)
        u, s, _ = np.linalg.svd(image.T, full_matrices=False)
        if s.size == 0 or s[0] == 0:
            return 0
        keep = int(np.sum(s > rtol * s[0]))
        basis = u[:, :keep].T
    return basis.shape[0]


def dln_hessian_rank(matrices: Sequence, rtol: float = 1e-5) -> int:
    """Rank of the loss Hessian of a deep linear network at a realisable point.

    At a point where the network fits its targets exactly, the Hessian of the squared
    error is the Gauss-Newton matrix, whose rank (for inputs with a full-rank
    covariance) is that of the differential of the product map
    ``w -> W_1 W_2 ... W_L``. Its image is a sum of "rectangles"
    ``{X : col(X) in C_s, row(X) in D_s}`` with ``C_s = col(W_1 ... W_{s-1})`` shrinking
    and ``D_s = row(W_{s+1} ... W_L)`` growing in s, so its dimension is the area of a
    staircase: ``sum_s c_s d_s - sum_s c_{s+1} d_s`` with ``c_s, d_s`` their dimensions.

    Args:
        matrices: the weights ``W_1, ..., W_L`` (``x @ W`` convention).
        rtol: relative singular-value threshold (see :func:`product_rank`).

    Returns:
        The Hessian rank. By the splitting lemma the LLC at the point is at least half
        of it.

    Examples:
        >>> import numpy as np
        >>> dln_hessian_rank([np.eye(3), np.eye(3)])  # a submersion onto 3x3 matrices
        9
    """
    mats = [np.asarray(w, np.float64) for w in matrices]
    c = [mats[0].shape[0]] + [product_rank(mats[:s], rtol) for s in range(1, len(mats))]
    d = [product_rank(mats[s + 1 :], rtol) for s in range(len(mats) - 1)] + [mats[-1].shape[1]]
    area = sum(ci * di for ci, di in zip(c, d, strict=True))
    overlap = sum(c[s + 1] * d[s] for s in range(len(mats) - 1))
    return area - overlap


def dln_local_learning_coefficient(matrices: Sequence, rtol: float = 1e-5) -> Fraction | None:
    """The LLC at a realisable deep-linear-network point when it is a Morse-Bott point.

    If the differential of the product map has its generic rank
    ``rho (H_in + H_out - rho)`` (``rho`` the smallest width: the dimension of the
    variety of matrices of rank <= rho), the map has constant rank near the point, the
    true-parameter set is a smooth manifold there and the loss is Morse-Bott, so the
    local learning coefficient is exactly half the Hessian rank. Otherwise the local
    value is not known in closed form and None is returned; it is then only bounded
    below by ``max(aoyagi_lambda, dln_hessian_rank / 2)``.

    Aoyagi's lambda is the *global* coefficient of the true-parameter set, attained at
    its most singular points; a generic teacher can have a larger local coefficient.

    Args:
        matrices: the weights ``W_1, ..., W_L`` (``x @ W`` convention).
        rtol: relative singular-value threshold.

    Returns:
        The exact local coefficient, or None.

    Examples:
        >>> import numpy as np
        >>> a = np.outer(np.ones(4), np.ones(3))  # rank 1, 4x3
        >>> dln_local_learning_coefficient([np.eye(4), a])  # generic rank 4*3 = 12
        Fraction(6, 1)
        >>> dln_local_learning_coefficient([a, np.zeros((3, 2))]) is None
        True
    """
    mats = [np.asarray(w, np.float64) for w in matrices]
    widths = [mats[0].shape[0]] + [w.shape[1] for w in mats]
    rho = min(widths)
    generic = rho * (widths[0] + widths[-1] - rho)
    rank = dln_hessian_rank(mats, rtol)
    return Fraction(rank, 2) if rank == generic else None


def dln_minimal_point(matrices: Sequence, rtol: float = 1e-5) -> tuple[np.ndarray, ...]:
    """The most singular factorisation of a deep linear network's end-to-end map.

    Keeps the network's function ``x -> x W_1 ... W_L`` (rank ``r``) and removes from
    every layer what does not carry it: with ``A_0`` the ``r``-dimensional input
    subspace the map sees (the column space of the product) and
    ``A_s = x-image of A_0 after s layers``, layer ``s`` becomes
    ``Pi_{A_(s-1)} W_s``. Every layer then has rank exactly ``r`` and maps ``A_(s-1)``
    onto ``A_s``, with kernel the orthogonal complement.

    Why this point: every factorisation of a rank-``r`` map whose layers all have rank
    ``r`` is carried to every other one by loss-preserving symmetries
    (``W_s -> g_(s-1)^(-1) W_s g_s`` inside, changes of basis of input and output, which
    change ``K`` only up to equivalence), so they share one local learning coefficient;
    and near such a point the network splits into ``r (H_in + H_out) - r^2`` regular
    directions and a rank-0 network with widths ``H_j - r`` (the ``Delta_j`` of Aoyagi's
    formula), which is the reduction his value rests on. The LLC *at* this point is
    therefore Aoyagi's lambda, the global coefficient, whereas a generic teacher can
    have a larger one (:func:`dln_local_learning_coefficient`). This is an argument,
    not a computation; what is tested is its consequence for the Hessian, whose rank
    here is ``r (H_in + H_out) - r^2``: half of it is the first term of Aoyagi's formula,
    and the rest of lambda comes from the degenerate directions.

    Args:
        matrices: the weights ``W_1, ..., W_L`` (``x @ W`` convention).
        rtol: relative singular-value threshold for the rank (see :func:`product_rank`).

    Returns:
        The new weights, float64, same shapes, same product (to rounding).

    Examples:
        >>> import numpy as np
        >>> w1 = np.diag([1.0, 2.0, 3.0])  # full rank, but the next layer uses one unit
        >>> w2 = np.array([[1.0], [0.0], [0.0]])
        >>> m1, m2 = dln_minimal_point([w1, w2])
        >>> [int(np.linalg.matrix_rank(m)) for m in (m1, m2)], np.allclose(m1 @ m2, w1 @ w2)
        ([1, 1], True)
    """
    mats = [np.asarray(w, np.float64) for w in matrices]
    rank = product_rank(mats, rtol)
    product = mats[0]
    for w in mats[1:]:
        product = product @ w
    if rank == 0:
        return tuple(np.zeros_like(w) for w in mats)
    basis = np.linalg.svd(product, full_matrices=False)[0][:, :rank]  # orthonormal A_0
    out = []
    for w in mats:
        out.append(basis @ (basis.T @ w))
        image = basis.T @ w  # r x H_(s+1), rank r: the signal goes through every layer
        basis = np.linalg.svd(image.T, full_matrices=False)[0][:, :rank]
    return tuple(out)
