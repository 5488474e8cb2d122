"""The offline demo hub: procedural image tasks and a small zoo of timm models trained on them."""
