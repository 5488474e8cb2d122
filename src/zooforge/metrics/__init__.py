"""Transferability estimators: pure functions of arrays, higher = better transfer.

Each estimator lives in its own module with its paper, formula and shapes in the docstring, and is
recorded in ``REGISTRY`` with the inputs it needs, so callers can skip those a model cannot feed::

    from zooforge.metrics import REGISTRY, logme
    logme(features, labels)
    [name for name, est in REGISTRY.items() if est.needs <= {"features", "source_probs"}]
"""

from zooforge.metrics.registry import INPUTS, REGISTRY, Estimator, get_estimator, list_estimators, register
from zooforge.metrics.nce import nce
from zooforge.metrics.leep import leep
from zooforge.metrics.nleep import nleep
from zooforge.metrics.logme import LogMEFit, logme, logme_fit
from zooforge.metrics.gbc import gbc
from zooforge.metrics.hscore import hscore, regularized_hscore
from zooforge.metrics.transrate import transrate
from zooforge.metrics.parc import parc
from zooforge.metrics.sfda import sfda
from zooforge.metrics.otce import f_otce, fit_otce_weights, jc_otce, otce, otce_self, otce_terms
from zooforge.metrics.linear_probe import linear_probe

__all__ = [
    "REGISTRY", "INPUTS", "Estimator", "get_estimator", "list_estimators", "register",
    "nce", "leep", "nleep", "logme", "logme_fit", "LogMEFit", "gbc", "hscore", "regularized_hscore",
    "transrate", "parc", "sfda", "otce", "otce_terms", "fit_otce_weights", "f_otce", "jc_otce",
    "otce_self", "linear_probe",
]
