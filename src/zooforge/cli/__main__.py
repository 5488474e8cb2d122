"""``python -m zooforge.cli``."""

from zooforge.cli import main

main()
