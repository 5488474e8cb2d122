"""Hub dataset ids for ``hf:``: the repository's Parquet files at a pinned commit, read in place.

A Hub dataset whose repository holds Parquet files (the Hub's ``data/train-00000-of-00002.parquet``
layout, or a configuration's folder) is fetched with ``huggingface_hub.snapshot_download`` (Parquet
files only) and read like a local folder of Parquet files: a row group at a time, the commit sha
recorded, and the revision resolved through the hub cache's refs when offline. Other repositories
(CSV, JSON, image folders, loading scripts) go through ``datasets.load_dataset``.

Why not ``datasets.load_dataset`` for all of them: offline it serves "the latest cached version" of
a dataset whatever revision is asked for (measured with datasets 4: main loaded after a pinned older
commit gave the older commit's rows, silently), and it copies the data into its own Arrow cache
before the first read.
"""

from __future__ import annotations

from pathlib import Path

from zooforge.errors import DatasetError, describe

__all__ = ["hub_snapshot", "hub_dataset_error"]


def hub_snapshot(source: str, options: dict) -> tuple[Path, str] | None:
    """(the folder of the dataset's Parquet files at the asked revision, its commit sha), or None when
    the repository holds no Parquet files (the caller then uses ``datasets.load_dataset``)."""
    from huggingface_hub import HfApi, constants, snapshot_download

    from zooforge.zoo.hub import offline_if_unreachable

    config = options.get("config")
    patterns = [f"{config}/**/*.parquet", f"{config}/*.parquet"] if config else ["*.parquet", "**/*.parquet"]
    try:
        with offline_if_unreachable():
            if not config and not constants.HF_HUB_OFFLINE:       # refuse before downloading every configuration
                _one_configuration(source, HfApi().list_repo_files(source, repo_type="dataset",
                                                                   revision=options.get("revision")))
            folder = Path(snapshot_download(source, repo_type="dataset", revision=options.get("revision"),
                                            allow_patterns=patterns))
    except DatasetError:
        raise
    except Exception as exc:      # noqa: BLE001 - the hub client raises many kinds for "cannot get it"
        raise hub_dataset_error(source, exc) from None
    root = folder / config if config else folder
    files = sorted(p for p in root.rglob("*.parquet") if not p.name.startswith(".")) if root.is_dir() else []
    if not files:
        return None
    if not config:
        _one_configuration(source, [str(p.relative_to(root)) for p in files])
    return root, folder.name


def _one_configuration(source: str, paths: list[str]) -> None:
    """Refuse Parquet files that lie in several configurations' folders (``data/`` is the default one)."""
    tops = sorted({p.split("/")[0] for p in paths if p.endswith(".parquet") and "/" in p} - {"data"})
    if len(tops) > 1:
        raise DatasetError(f"hf:{source}: its Parquet files lie in several configurations ({', '.join(tops)}); "
                           f"choose one with ?config=.")


def hub_dataset_error(source: str, exc: Exception) -> DatasetError:
    """The hub said no (no such dataset, revision or file), or could not be reached: which, and the fix."""
    from huggingface_hub import constants

    from zooforge.zoo.hub import hub_refusal

    refusal = None if constants.HF_HUB_OFFLINE else hub_refusal(exc)
    if refusal or type(exc).__name__ == "DatasetNotFoundError" and not constants.HF_HUB_OFFLINE:
        return DatasetError(f"cannot load dataset hf:{source}: {refusal or 'the hub has no such dataset'} (on "
                            f"{constants.ENDPOINT}); fix the id or ?revision=, or give a local folder or file. "
                            f"[{describe(exc)}]")
    return DatasetError(
        f"cannot load dataset hf:{source}: it is not a local path, not in the local Hugging Face cache "
        f"({constants.HF_HUB_CACHE}), and the hub cannot be reached (or offline mode, HF_HUB_OFFLINE=1, is set). "
        f"Fix: on a connected machine run `hf download {source} --repo-type dataset` (same HF_HOME) and copy that "
        f"cache here, or save it with datasets.load_dataset({source!r}).save_to_disk('folder'), copy the folder "
        f"here and give hf:folder. [{describe(exc)}]")
