"""Models whose learning coefficient is known exactly, for tests and benchmarks.

Exact formulas (``fractions.Fraction`` results, with multiplicity):

* :func:`dln_learning_coefficient`: deep linear networks (Aoyagi 2024).
* :func:`rrr_learning_coefficient`: reduced-rank regression (Aoyagi & Watanabe 2005).
* :func:`normal_crossing_learning_coefficient`: ``K = prod_j w_j^(2 k_j)`` with prior
  ``prod_j |w_j|^(h_j)``.

Problem builders return a :class:`Problem` with everything :func:`llc.estimate_llc`
needs (``params`` at the true point, ``loss_fn``, ``data``) and the true lambda.

:mod:`llc.ground_truth.exact` holds the formulas, :mod:`llc.ground_truth.problems` the
builders, and :mod:`llc.ground_truth.buckets` Furman & Lau's size buckets and recipes;
every name is available here.
"""

from llc.ground_truth.buckets import DLN_BUCKETS, DLNBucket, dln_recipe, make_dln_bucket_problem
from llc.ground_truth.exact import (
    aoyagi_subset,
    dln_hessian_rank,
    dln_learning_coefficient,
    dln_local_learning_coefficient,
    dln_minimal_point,
    normal_crossing_learning_coefficient,
    product_rank,
    rrr_learning_coefficient,
)
from llc.ground_truth.problems import (
    Problem,
    make_dln_problem,
    make_normal_crossing_problem,
    make_regular_problem,
    make_rrr_problem,
)

__all__ = [
    "DLN_BUCKETS",
    "aoyagi_subset",
    "DLNBucket",
    "Problem",
    "dln_hessian_rank",
    "dln_learning_coefficient",
    "dln_local_learning_coefficient",
    "dln_minimal_point",
    "dln_recipe",
    "make_dln_bucket_problem",
    "make_dln_problem",
    "make_normal_crossing_problem",
    "make_regular_problem",
    "make_rrr_problem",
    "normal_crossing_learning_coefficient",
    "product_rank",
    "rrr_learning_coefficient",
]
