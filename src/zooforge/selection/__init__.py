"""Model selection: rank a catalogue for a dataset, and judge rankings against fine-tuned truth."""

from zooforge.selection.rank import DEFAULT_METRICS, rank, score_featureset, score_model
from zooforge.selection.evaluate import evaluate

__all__ = ["rank", "score_model", "score_featureset", "evaluate", "DEFAULT_METRICS"]
