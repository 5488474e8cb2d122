"""Model selection: rank a catalogue for a dataset, confirm the choice under a budget of short
fine-tunes (``select``), and judge rankings against fine-tuned truth."""

from zooforge.selection.rank import DEFAULT_METRICS, rank, score_featureset, score_model
from zooforge.selection.evaluate import evaluate
from zooforge.selection.select import SelectConfig, select

__all__ = ["rank", "score_model", "score_featureset", "evaluate", "select", "SelectConfig", "DEFAULT_METRICS"]
