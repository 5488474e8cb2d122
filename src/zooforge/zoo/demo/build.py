"""Deprecated alias of :mod:`zooforge.demo.build`, kept for one release because the README showed
``python -m zooforge.zoo.demo.build``: the script trains models, so it moved above ``tuning/``."""

import warnings

from zooforge.demo.build import *  # noqa: F401,F403 - the alias
from zooforge.demo.build import main

warnings.warn("zooforge.zoo.demo.build moved to zooforge.demo.build; this alias goes in the next release.",
              FutureWarning, stacklevel=2)

if __name__ == "__main__":
    main()
