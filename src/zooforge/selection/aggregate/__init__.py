"""Combining several chosen models: B-Tuning, Zoo-Tuning and Hub-Pathway.

Each takes a catalogue and a dataset (or explicit member ids), trains with the one loop of
:mod:`zooforge.tuning.loop` and returns an :class:`AggregateResult` (held-out accuracy, trainable
and total parameters, time, the members' weights, the trained model); :func:`save_result` writes it.
"""

from zooforge.selection.aggregate._common import AggregateResult, save_result
from zooforge.selection.aggregate.btuning import btuning
from zooforge.selection.aggregate.hubpathway import hubpathway
from zooforge.selection.aggregate.zootuning import zootuning

METHODS = {"btuning": btuning, "zootuning": zootuning, "hubpathway": hubpathway}

__all__ = ["AggregateResult", "METHODS", "btuning", "hubpathway", "save_result", "zootuning"]
