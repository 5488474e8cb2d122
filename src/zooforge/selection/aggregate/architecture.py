"""Which models Zoo-Tuning can aggregate: one architecture (the same layers, of the same kinds, holding
tensors of the same shapes; the source classifier, sized by the source task, left out), and, from a
ranked zoo, which group of them (the top-ranked model's architecture where it has siblings)."""

from __future__ import annotations

from torch import nn

from zooforge.errors import ZooforgeError

__all__ = ["GroupWarning", "architecture", "architecture_group", "check_same_architecture", "group_warning",
           "source_head"]


def source_head(model: nn.Module) -> set[str]:
    """The module names of a timm model's source classifier: its size is the source task's, so it is
    neither aggregated nor compared."""
    classifier = getattr(model, "pretrained_cfg", {}).get("classifier")
    return set(classifier if isinstance(classifier, (list, tuple)) else [classifier] if classifier else [])


def architecture(model: nn.Module, skip: set[str] = frozenset()) -> tuple[dict, dict]:
    """(each tensor's shape, each layer's kind) by name, ``skip``'s modules left out: what models must
    share to be aggregated (equal shapes are not enough: a GroupNorm and a LayerNorm hold the same tensors)."""
    def kept(name: str) -> bool:
        return not any(name == s or name.startswith(s + ".") for s in skip)

    return ({k: v.shape for k, v in model.state_dict().items() if kept(k)},
            {k: type(v).__name__ for k, v in model.named_modules() if kept(k)})


def check_same_architecture(models: list[nn.Module], ids: list[str], skip: set[str]) -> None:
    """Refuse ``models`` (named ``ids``) unless each has the first's :func:`architecture`, naming where
    the first that differs does."""
    ref, ref_kinds = architecture(models[0], skip)
    for m, mid in zip(models[1:], ids[1:]):
        other, other_kinds = architecture(m, skip)
        if other != ref:
            diff = sorted(set(ref) ^ set(other)) or [k for k in ref if ref[k] != other[k]]
        elif other_kinds != ref_kinds:
            diff = [f"{k} ({ref_kinds.get(k)} vs {other_kinds.get(k)})" for k in sorted(set(ref_kinds) | set(other_kinds))
                    if ref_kinds.get(k) != other_kinds.get(k)]
        else:
            continue
        raise ZooforgeError(f"Zoo-Tuning needs models of one architecture: {ids[0]!r} and {mid!r} differ "
                            f"at {diff[:3]}; use Hub-Pathway for heterogeneous models.")


class GroupWarning(UserWarning):
    """Zoo-Tuning's group is not the top-ranked model's architecture (``zootuning``'s ``passed_over``)."""


def group_warning(passed_over: list[str], lead: str) -> str:
    """What a user is told when Zoo-Tuning's group, led by ``lead``, passed over the models ranked above it."""
    return (f"Zoo-Tuning aggregates one architecture, and the top-ranked model {passed_over[0]} has no other of "
            f"its architecture here, so the group is led by {lead}, ranked {len(passed_over) + 1}. Zoo-Tuning of "
            "another architecture than the top-ranked model's can lose to that model fine-tuned alone (by 13 "
            "and 18 points on demo counting in the README's aggregation benchmark); compare with it: "
            "`zooforge aggregate ... --method ensemble --top-k 1`.")


def architecture_group(entries: list, size: int | None = None, min_models: int = 2) -> tuple[list, list[str]]:
    """Zoo-Tuning's members among catalogue ``entries`` given best first, loaded (Backbones): the
    highest-ranked model with at least ``min_models`` - 1 others of its :func:`architecture` among
    them, and those others in ranked order, ``size`` in all (None: every one); with the ids ranked
    above it, passed over because their architectures have fewer models. A model is loaded only when
    its layout is needed (where the top model has siblings, the search stops at the ``size``-th) and
    held only while it may be a member of the group being tried, so a scan of a large zoo holds one
    group at most. Where the top model leads the group, each model is loaded once; where it was passed
    over, the group's members were let go during the failed scans and are loaded once more."""
    from zooforge.zoo.backbone import Backbone

    keys: dict[str, tuple] = {}
    held: dict[str, object] = {}     # the Backbones of the group being tried, as loaded for their layouts

    def key(entry) -> tuple:
        if entry.id not in keys:
            backbone = Backbone.from_entry(entry)
            shapes, kinds = architecture(backbone.model, source_head(backbone.model))
            keys[entry.id] = tuple(sorted((k, tuple(v)) for k, v in shapes.items())), tuple(sorted(kinds.items()))
            held[entry.id] = backbone
        return keys[entry.id]

    tried: set[tuple] = set()        # a model ranked below one of its kind that was too few is too few as well
    for i, lead in enumerate(entries):
        if key(lead) in tried:
            held.pop(lead.id, None)
            continue
        group = [lead]
        for e in entries[i + 1:]:
            if size is not None and len(group) >= max(size, min_models):
                break
            if key(e) == key(lead):
                group.append(e)
            else:
                held.pop(e.id, None)          # loaded for its layout only; loaded again if it leads a group
        if len(group) >= min_models:
            return ([held.get(e.id) or Backbone.from_entry(e) for e in group[:size]],
                    [e.id for e in entries[:i]])
        tried.add(key(lead))
        held.clear()
    raise ZooforgeError(f"Zoo-Tuning aggregates models of one architecture, and none of the {len(entries)} ranked "
                        f"models has {min_models - 1} other of its architecture; aggregate them with --method "
                        "hubpathway or ensemble instead.")
