"""The zoos of the selection benchmark (``benchmarks/selection.py``): which checkpoints, trained on
what and for how long, the truth protocol of each zoo, its targets, and the code that builds them in
the work folder (timm zoos trained on demo source tasks; MiniLM variants written by
``save_pretrained``). The zoos themselves are described in ``selection.py``'s docstring."""

from __future__ import annotations

from pathlib import Path

TIMM2 = (  # (id, arch, source task or None, model_args, source epochs)
    ("timm2/convnext2-shapes", "test_convnext2", "shapes-source", {}, 20),
    ("timm2/convnext2-textures", "test_convnext2", "textures-source", {}, 20),
    ("timm2/convnext2-counting", "test_convnext2", "counting-source", {}, 20),
    ("timm2/effgn-glyphs", "test_efficientnet_gn", "glyphs-source", {}, 20),
    ("timm2/effgn-orientation", "test_efficientnet_gn", "orientation-source", {}, 20),
    ("timm2/vit3-shapes", "test_vit3", "shapes-source", {"img_size": 32}, 20),
    ("timm2/vit3-counting", "test_vit3", "counting-source", {"img_size": 32}, 20),
    ("timm2/nfnet-textures", "test_nfnet", "textures-source", {}, 20),
    ("timm2/coatnet-orientation", "test_coatnet", "orientation-source", {"img_size": 32}, 20),
    ("timm2/convnext2-glyphs-short", "test_convnext2", "glyphs-source", {}, 3),
    ("timm2/vitrelpos-random", "test_vit_relpos", None, {"img_size": 32}, 0),
    ("timm2/effln-random", "test_efficientnet_ln", None, {}, 0),
)

TIMM3 = (  # same fields as TIMM2: four architectures, each trained on several source tasks
    ("timm3/convnext3-shapes", "test_convnext3", "shapes-source", {}, 20),
    ("timm3/convnext3-textures", "test_convnext3", "textures-source", {}, 20),
    ("timm3/convnext3-counting", "test_convnext3", "counting-source", {}, 20),
    ("timm3/convnext3-glyphs", "test_convnext3", "glyphs-source", {}, 20),
    ("timm3/evos-orientation", "test_efficientnet_evos", "orientation-source", {}, 20),
    ("timm3/evos-colour", "test_efficientnet_evos", "colour-source", {}, 20),
    ("timm3/evos-shapes", "test_efficientnet_evos", "shapes-source", {}, 20),
    ("timm3/evos-glyphs", "test_efficientnet_evos", "glyphs-source", {}, 20),
    ("timm3/vit2-textures", "test_vit2", "textures-source", {"img_size": 32}, 20),
    ("timm3/vit2-counting", "test_vit2", "counting-source", {"img_size": 32}, 20),
    ("timm3/vit2-orientation", "test_vit2", "orientation-source", {"img_size": 32}, 20),
    ("timm3/vit2-colour", "test_vit2", "colour-source", {"img_size": 32}, 20),
    ("timm3/vit4-shapes", "test_vit4", "shapes-source", {"img_size": 32}, 20),
    ("timm3/vit4-glyphs", "test_vit4", "glyphs-source", {"img_size": 32}, 20),
    ("timm3/vit4-orientation-short", "test_vit4", "orientation-source", {"img_size": 32}, 3),
    ("timm3/vit4-random", "test_vit4", None, {"img_size": 32}, 0),
)

TIMM4 = (  # same fields: five architectures (the size of a small hub zoo), four checkpoints each
    ("timm4/maxvit-shapes", "test_maxvit", "shapes-source", {"img_size": 32}, 20),
    ("timm4/maxvit-counting", "test_maxvit", "counting-source", {"img_size": 32}, 20),
    ("timm4/maxvit-textures", "test_maxvit", "textures-source", {"img_size": 32}, 20),
    ("timm4/maxvit-orientation", "test_maxvit", "orientation-source", {"img_size": 32}, 20),
    ("timm4/resnet-glyphs", "test_resnet", "glyphs-source", {}, 20),
    ("timm4/resnet-counting", "test_resnet", "counting-source", {}, 20),
    ("timm4/resnet-orientation", "test_resnet", "orientation-source", {}, 20),
    ("timm4/resnet-shapes", "test_resnet", "shapes-source", {}, 20),
    ("timm4/effgn-shapes", "test_efficientnet_gn", "shapes-source", {}, 20),
    ("timm4/effgn-textures", "test_efficientnet_gn", "textures-source", {}, 20),
    ("timm4/effgn-counting", "test_efficientnet_gn", "counting-source", {}, 20),
    ("timm4/effgn-colour-short", "test_efficientnet_gn", "colour-source", {}, 3),
    ("timm4/vit3-glyphs", "test_vit3", "glyphs-source", {"img_size": 32}, 20),
    ("timm4/vit3-textures", "test_vit3", "textures-source", {"img_size": 32}, 20),
    ("timm4/vit3-orientation", "test_vit3", "orientation-source", {"img_size": 32}, 20),
    ("timm4/vit3-colour", "test_vit3", "colour-source", {"img_size": 32}, 20),
    ("timm4/byobnet-shapes", "test_byobnet", "shapes-source", {}, 20),
    ("timm4/byobnet-glyphs", "test_byobnet", "glyphs-source", {}, 20),
    ("timm4/byobnet-textures", "test_byobnet", "textures-source", {}, 20),
    ("timm4/byobnet-random", "test_byobnet", None, {}, 0),
)

TIMM5 = (  # same fields: five architectures of the other zoos on source tasks they did not get there,
    # trained for 20, 20, 8 and 3 epochs (hub checkpoints differ in how long they were trained too)
    ("timm5/effnet-counting", "test_efficientnet", "counting-source", {}, 20),
    ("timm5/effnet-orientation", "test_efficientnet", "orientation-source", {}, 20),
    ("timm5/effnet-colour", "test_efficientnet", "colour-source", {}, 8),
    ("timm5/effnet-shapes-short", "test_efficientnet", "shapes-source", {}, 3),
    ("timm5/convnext2-orientation", "test_convnext2", "orientation-source", {}, 20),
    ("timm5/convnext2-colour", "test_convnext2", "colour-source", {}, 20),
    ("timm5/convnext2-glyphs", "test_convnext2", "glyphs-source", {}, 8),
    ("timm5/convnext2-random", "test_convnext2", None, {}, 0),
    ("timm5/vit-shapes", "test_vit", "shapes-source", {"img_size": 32}, 20),
    ("timm5/vit-counting", "test_vit", "counting-source", {"img_size": 32}, 20),
    ("timm5/vit-textures", "test_vit", "textures-source", {"img_size": 32}, 8),
    ("timm5/vit-colour-short", "test_vit", "colour-source", {"img_size": 32}, 3),
    ("timm5/mambaout-shapes", "test_mambaout", "shapes-source", {}, 20),
    ("timm5/mambaout-glyphs", "test_mambaout", "glyphs-source", {}, 20),
    ("timm5/mambaout-orientation", "test_mambaout", "orientation-source", {}, 8),
    ("timm5/mambaout-counting-short", "test_mambaout", "counting-source", {}, 3),
    ("timm5/nfnet-shapes", "test_nfnet", "shapes-source", {}, 20),
    ("timm5/nfnet-counting", "test_nfnet", "counting-source", {}, 20),
    ("timm5/nfnet-glyphs", "test_nfnet", "glyphs-source", {}, 8),
    ("timm5/nfnet-random", "test_nfnet", None, {}, 0),
)

TIMM6 = (  # same fields, built after select's full-length rule and the stacked default were fixed: five
    # architectures the other zoos had at most once (CoAtNet, EfficientNet-LN, ViT-relpos, ConvNeXt,
    # EfficientNet-EvoS), 24 checkpoints as in a hub zoo, trained for 20, 8 or 3 epochs or not at all
    ("timm6/coatnet-shapes", "test_coatnet", "shapes-source", {"img_size": 32}, 20),
    ("timm6/coatnet-textures", "test_coatnet", "textures-source", {"img_size": 32}, 20),
    ("timm6/coatnet-counting", "test_coatnet", "counting-source", {"img_size": 32}, 20),
    ("timm6/coatnet-glyphs", "test_coatnet", "glyphs-source", {"img_size": 32}, 8),
    ("timm6/coatnet-colour-short", "test_coatnet", "colour-source", {"img_size": 32}, 3),
    ("timm6/effln-orientation", "test_efficientnet_ln", "orientation-source", {}, 20),
    ("timm6/effln-glyphs", "test_efficientnet_ln", "glyphs-source", {}, 20),
    ("timm6/effln-counting", "test_efficientnet_ln", "counting-source", {}, 20),
    ("timm6/effln-colour", "test_efficientnet_ln", "colour-source", {}, 8),
    ("timm6/effln-random", "test_efficientnet_ln", None, {}, 0),
    ("timm6/vitrelpos-textures", "test_vit_relpos", "textures-source", {"img_size": 32}, 20),
    ("timm6/vitrelpos-colour", "test_vit_relpos", "colour-source", {"img_size": 32}, 20),
    ("timm6/vitrelpos-orientation", "test_vit_relpos", "orientation-source", {"img_size": 32}, 20),
    ("timm6/vitrelpos-shapes", "test_vit_relpos", "shapes-source", {"img_size": 32}, 8),
    ("timm6/vitrelpos-counting-short", "test_vit_relpos", "counting-source", {"img_size": 32}, 3),
    ("timm6/convnext-glyphs", "test_convnext", "glyphs-source", {}, 20),
    ("timm6/convnext-textures", "test_convnext", "textures-source", {}, 20),
    ("timm6/convnext-colour", "test_convnext", "colour-source", {}, 20),
    ("timm6/convnext-orientation", "test_convnext", "orientation-source", {}, 8),
    ("timm6/convnext-shapes-short", "test_convnext", "shapes-source", {}, 3),
    ("timm6/evos-counting", "test_efficientnet_evos", "counting-source", {}, 20),
    ("timm6/evos-textures", "test_efficientnet_evos", "textures-source", {}, 20),
    ("timm6/evos-colour", "test_efficientnet_evos", "colour-source", {}, 20),
    ("timm6/evos-random", "test_efficientnet_evos", None, {}, 0),
)

TIMM_ZOOS = {"timm2": TIMM2, "timm3": TIMM3, "timm4": TIMM4, "timm5": TIMM5, "timm6": TIMM6}  # the image zoos this script trains, by name

# (id, layers kept, top layers re-initialised, noise (x each tensor's std), pretrained)
TEXT = (
    ("text/minilm-l6", 6, 0, 0.0, True),
    ("text/minilm-l6-random", 6, 0, 0.0, False),
    ("text/minilm-l4", 4, 0, 0.0, True),
    ("text/minilm-l2", 2, 0, 0.0, True),
    ("text/minilm-l1", 1, 0, 0.0, True),
    ("text/minilm-l6-reinit2", 6, 2, 0.0, True),
    ("text/minilm-l6-reinit4", 6, 4, 0.0, True),
    ("text/minilm-l6-noise05", 6, 0, 0.5, True),
    ("text/minilm-l6-noise15", 6, 0, 1.5, True),
)


def protocols():
    from zooforge.demo.truth import PROTOCOL, Protocol

    text = Protocol(train_per_class=40, test_per_class=50, epochs=6, batch_size=16, lrs=(1e-4, 3e-5))
    return {"demo": PROTOCOL, "timm2": PROTOCOL, "timm3": PROTOCOL, "timm4": PROTOCOL, "timm5": PROTOCOL, "timm6": PROTOCOL,
            "text": text}


# "task@n": the task trained (truth) and ranked on n samples a class instead of the protocol's: the
# way to make a target that every model masters at 100 a class separate them again.
ZOO_TARGETS = {
    "demo": ("colour", "counting", "glyphs", "orientation", "position", "shapes", "textures",
             "orientation@20", "textures@20"),
    "timm2": ("shapes", "textures", "counting", "orientation", "position", "glyphs", "orientation@20", "textures@20"),
    "timm3": ("counting", "glyphs", "orientation@20", "shapes", "textures@20"),
    "timm4": ("counting", "glyphs", "orientation@20", "shapes", "textures@20"),
    "timm5": ("counting", "glyphs", "orientation@20", "shapes@20", "textures@20"),
    "timm6": ("counting", "glyphs", "orientation@20", "shapes@20", "textures@20"),
    "text": ("topics@10", "intent", "negation", "relation"),
}

# --- building the zoos ------------------------------------------------------------------------------

def build_timm_zoo(zoo: str, work: Path) -> Path:
    """Train the models of ``TIMM_ZOOS[zoo]`` on their source tasks; its catalogue's path."""
    from zooforge.demo.build import DemoModel, build_model, write_catalogue

    models = TIMM_ZOOS[zoo]
    out = work / zoo
    specs = tuple(DemoModel(i, a, s, m) for i, a, s, m, _ in models)
    for spec, (*_, epochs) in zip(specs, models):
        if spec.source_task and not (out / spec.weights_file).is_file():
            print(f"training {spec.id} on demo:{spec.source_task} ({epochs} epochs)", flush=True)
            build_model(spec, out, epochs=epochs, progress=False)
    return write_catalogue(out, specs, f"The image zoo {zoo} of benchmarks/selection.py (built by its `build`).")


def build_text(work: Path) -> Path:
    import torch
    import transformers

    from zooforge.zoo.catalogue import load_catalogue

    out = work / "text"
    out.mkdir(parents=True, exist_ok=True)
    base = load_catalogue("text-demo")[0]
    from zooforge.zoo.loaders import packaged_folder

    source = packaged_folder(base)
    lines = ["# MiniLM variants for benchmarks/selection.py (built by its `build`).", ""]
    for mid, layers, reinit, noise, pretrained in TEXT:
        folder = out / mid.split("/")[1]
        name = source
        if reinit or noise:
            name = folder.name
            if not (folder / "config.json").is_file():
                print(f"writing {mid}", flush=True)
                model = transformers.AutoModel.from_pretrained(source)
                gen = torch.Generator().manual_seed(0)
                with torch.no_grad():
                    for layer in model.encoder.layer[len(model.encoder.layer) - reinit:]:
                        for module in layer.modules():
                            if isinstance(module, torch.nn.Linear):
                                module.weight.normal_(0.0, model.config.initializer_range, generator=gen)
                                module.bias.zero_()
                            elif isinstance(module, torch.nn.LayerNorm):
                                module.weight.fill_(1.0)
                                module.bias.zero_()
                    if noise:
                        for p in model.parameters():
                            if p.ndim > 1:
                                p.add_(torch.randn(p.shape, generator=gen) * noise * p.std())
                model.save_pretrained(folder)
                transformers.AutoTokenizer.from_pretrained(source).save_pretrained(folder)
        lines += ["[[model]]", f'id = "{mid}"', 'source = "hf"', f'name = "{name}"', 'modality = "text"']
        if not pretrained:
            lines.append("pretrained = false")
        if layers < 6:
            lines.append(f"model_args = {{ num_hidden_layers = {layers} }}")
        lines += ['tags = ["minilm"]', ""]
    path = out / "catalogue.toml"
    path.write_text("\n".join(lines))
    return path


def catalogue_path(zoo: str, work: Path):
    if zoo in TIMM_ZOOS:
        return build_timm_zoo(zoo, work)
    return {"demo": lambda: "demo", "text": lambda: build_text(work)}[zoo]()


def split_target(target: str) -> tuple[str, int | None]:
    """``"orientation@20"`` -> ("orientation", 20): the task trained and ranked on 20 samples a class."""
    task, _, n = target.partition("@")
    return task, int(n) if n else None


def target_protocol(zoo: str, target: str):
    from dataclasses import replace

    protocol = protocols()[zoo]
    n = split_target(target)[1]
    return replace(protocol, train_per_class=n) if n else protocol


def target_data(zoo: str, target: str) -> str:
    return f"demo:{split_target(target)[0]}?n={target_protocol(zoo, target).train_per_class}"
