"""Deprecated alias of :mod:`zooforge.demo.truth`, kept for one release because the README showed
``python -m zooforge.zoo.demo.truth``: the script trains models, so it moved above ``tuning/``."""

import warnings

from zooforge.demo.truth import *  # noqa: F401,F403 - the alias
from zooforge.demo.truth import main

warnings.warn("zooforge.zoo.demo.truth moved to zooforge.demo.truth; this alias goes in the next release.",
              FutureWarning, stacklevel=2)

if __name__ == "__main__":
    main()
