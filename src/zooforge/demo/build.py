"""Rebuild the demo zoo: train each small timm model on its source task and write its weights.

    python -m zooforge.demo.build            # all models (a few minutes on 2 CPU cores)
    python -m zooforge.demo.build --only demo/vit-glyphs --out /tmp/zoo

Deterministic: fixed seeds, CPU, a fixed thread count and the generator's fixed images give the same
weights on the same library versions. Weights are stored as float16 safetensors (about 0.5 MB each)
and loaded back as float32.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from zooforge.zoo.demo.tasks import TASKS, generate

__all__ = ["ZOO", "DemoModel", "build_model", "write_catalogue"]

HERE = Path(__file__).parent.parent / "zoo" / "demo"     # where the library reads the zoo
INPUT_SIZE = [3, 32, 32]
TRAIN_PER_CLASS = 300
EPOCHS = 20


@dataclass(frozen=True)
class DemoModel:
    id: str
    arch: str
    source_task: str | None            # None: randomly initialised, no head
    model_args: dict = field(default_factory=dict)

    @property
    def weights_file(self) -> str:
        return f"weights/{self.id.split('/')[1]}.safetensors"


_VIT = {"img_size": 32}
ZOO: tuple[DemoModel, ...] = (
    DemoModel("demo/effnet-shapes", "test_efficientnet", "shapes-source"),
    DemoModel("demo/effnet-glyphs", "test_efficientnet", "glyphs-source"),
    DemoModel("demo/effnet-textures", "test_efficientnet", "textures-source"),
    DemoModel("demo/convnext-counting", "test_convnext", "counting-source"),
    DemoModel("demo/convnext-shapes", "test_convnext", "shapes-source"),
    DemoModel("demo/convnext-orientation", "test_convnext", "orientation-source"),
    DemoModel("demo/resnet-textures", "test_resnet", "textures-source"),
    DemoModel("demo/resnet-colour", "test_resnet", "colour-source"),
    DemoModel("demo/vit-glyphs", "test_vit", "glyphs-source", _VIT),
    DemoModel("demo/vit-orientation", "test_vit", "orientation-source", _VIT),
    DemoModel("demo/mambaout-colour", "test_mambaout", "colour-source"),
    DemoModel("demo/byobnet-counting", "test_byobnet", "counting-source"),
    DemoModel("demo/resnet-random", "test_resnet", None),
    DemoModel("demo/convnext-random", "test_convnext", None),
)


def _entry(spec: DemoModel, checkpoint: Path | None):
    from zooforge.zoo.catalogue import CatalogueEntry

    classes = len(TASKS[spec.source_task].classes) if spec.source_task else 0
    return CatalogueEntry(id=spec.id, source="local" if checkpoint else "timm", name=spec.arch,
                          checkpoint=checkpoint, num_classes=classes, input_size=tuple(INPUT_SIZE),
                          crop_pct=1.0, pretrained=False, model_args=dict(spec.model_args))


def build_model(spec: DemoModel, out_dir: Path, *, per_class: int = TRAIN_PER_CLASS, epochs: int = EPOCHS,
                progress: bool = True) -> dict:
    """Train one demo model on its source task and save its float16 weights; returns a summary."""
    import timm
    from safetensors.torch import save_file

    from zooforge.tuning.loop import TrainConfig, train
    from zooforge.zoo.transforms import ImageTransform

    if spec.source_task is None:
        raise ValueError(f"{spec.id} is randomly initialised; it has no weights to build.")
    classes = TASKS[spec.source_task].classes
    torch.manual_seed(0)
    model = timm.create_model(spec.arch, pretrained=False, num_classes=len(classes), **spec.model_args)
    transform = ImageTransform.from_timm(model, _entry(spec, None))
    images, labels, _ = generate(spec.source_task, per_class, seed=1)
    held_images, held_labels, _ = generate(spec.source_task, max(20, per_class // 5), seed=2)
    to_x = lambda imgs: transform(torch.from_numpy(imgs).permute(0, 3, 1, 2))  # noqa: E731
    cfg = TrainConfig(epochs=epochs, batch_size=64, lr=2e-3, seed=0, device="cpu", progress=progress)
    result = train(model, to_x(images), torch.from_numpy(labels), cfg,
                   to_x(held_images), torch.from_numpy(held_labels))
    state = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    path = out_dir / spec.weights_file
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={"source_task": spec.source_task, "arch": spec.arch})
    return {"id": spec.id, "val_accuracy": result.history[-1].get("val_accuracy"), "seconds": result.seconds}


def write_catalogue(out_dir: Path, zoo: tuple[DemoModel, ...] = ZOO,
                    header: str = "The offline demo zoo. Rebuild the weights with: python -m zooforge.demo.build") -> Path:
    """A catalogue of ``zoo``: trained models point at their weights; random ones build from timm."""
    lines = [f"# {header}", ""]
    for spec in zoo:
        lines += ["[[model]]", f'id = "{spec.id}"']
        if spec.source_task:
            n = len(TASKS[spec.source_task].classes)
            lines += ['source = "local"', f'name = "{spec.arch}"', f'checkpoint = "{spec.weights_file}"',
                      f"num_classes = {n}", f'description = "{spec.arch} trained on demo:{spec.source_task}"']
        else:
            lines += ['source = "timm"', f'name = "{spec.arch}"', "pretrained = false", "num_classes = 0",
                      f'description = "{spec.arch}, random initialisation (a baseline)"']
        lines += [f"input_size = {INPUT_SIZE}", "crop_pct = 1.0"]
        if spec.model_args:
            args = ", ".join(f"{k} = {v}" for k, v in spec.model_args.items())
            lines += [f"model_args = {{ {args} }}"]
        tags = ["demo", spec.arch, spec.source_task or "random"]
        lines += [f"tags = {tags!r}".replace("'", '"'), ""]
    path = out_dir / "catalogue.toml"
    path.write_text("\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder for catalogue.toml and weights/")
    parser.add_argument("--only", action="append", help="model id(s) to build (default: all)")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--per-class", type=int, default=TRAIN_PER_CLASS)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    np.random.seed(0)
    for spec in ZOO:
        if spec.source_task is None or (args.only and spec.id not in args.only):
            continue
        print(f"training {spec.id} ({spec.arch}) on demo:{spec.source_task}", flush=True)
        summary = build_model(spec, args.out, per_class=args.per_class, epochs=args.epochs)
        print(f"  -> held-out accuracy {summary['val_accuracy']:.3f} in {summary['seconds']:.0f}s", flush=True)
    print("wrote", write_catalogue(args.out))


if __name__ == "__main__":
    main()
