"""What a model is and how to run it: catalogues, backbones, datasets, features, cost."""

from zooforge.zoo.catalogue import CatalogueEntry, entry_digest, filter_entries, load_catalogue
from zooforge.zoo.data import Dataset, load_dataset

__all__ = ["CatalogueEntry", "load_catalogue", "filter_entries", "entry_digest", "Dataset", "load_dataset",
           "Backbone", "extract", "FeatureSet"]


def __getattr__(name):  # torch-heavy parts load on first use, keeping `import zooforge.zoo` cheap
    if name == "Backbone":
        from zooforge.zoo.backbone import Backbone
        return Backbone
    if name in ("extract", "FeatureSet"):
        from zooforge.zoo import features
        return getattr(features, name)
    raise AttributeError(name)
