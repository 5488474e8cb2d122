"""zooforge: rank, reassemble and tune models from a zoo of pretrained backbones.

Importing the package is cheap: it loads no model, touches no network and imports no torch.
The parts live in sub-packages: ``zooforge.zoo`` (catalogues, backbones, data, features),
``zooforge.metrics`` (transferability estimators), ``zooforge.selection`` (ranking, evaluation,
audits), ``zooforge.tuning`` (the training loop and adapter methods).
"""

__all__ = ["__version__", "ZooforgeError"]

__version__ = "0.1.0"

from zooforge.errors import ZooforgeError  # noqa: E402
