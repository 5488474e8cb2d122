"""The demo's build and truth scripts: they train models, so they sit above ``tuning/``.

``zooforge.zoo.demo`` keeps what the library itself reads (the procedural tasks, the catalogues and
the weights); this package holds what makes them: ``python -m zooforge.demo.build`` trains the demo
zoo, ``python -m zooforge.demo.truth`` fine-tunes every model on every target for the shipped truth.
"""
