import pytest

from zooforge.errors import CatalogueError
from zooforge.zoo import filter_entries, load_catalogue


def _write(tmp_path, text, name="zoo.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_valid_catalogue_resolves_checkpoint_relative_to_file(tmp_path):
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "a.safetensors").write_bytes(b"x")
    path = _write(tmp_path, '''
[[model]]
id = "a"
source = "local"
name = "test_resnet"
checkpoint = "w/a.safetensors"
input_size = [3, 32, 32]
mean = [0.5]
std = [0.25, 0.25, 0.25]
tags = ["cnn"]
[[model]]
id = "b"
source = "timm"
name = "test_vit"
pretrained = false
''')
    a, b = load_catalogue(path)
    assert a.checkpoint == (tmp_path / "w" / "a.safetensors").resolve()
    assert a.input_size == (3, 32, 32) and a.tags == ("cnn",)
    assert b.pretrained is False and b.checkpoint is None
    assert [e.id for e in filter_entries([a, b], ["b*"])] == ["b"]


def test_every_bad_field_is_reported_with_file_and_id(tmp_path):
    path = _write(tmp_path, '''
[[model]]
id = "x"
source = "torchhub"
name = "m"
input_size = [3, 32]
crop_pct = 1.5
colour = "red"
[[model]]
id = "x"
source = "timm"
name = "test_vit"
[[model]]
id = "x"
source = "timm"
name = "test_vit"
''')
    with pytest.raises(CatalogueError) as info:
        load_catalogue(path)
    text = str(info.value)
    assert f"{path}: model #1 (id 'x'): `source` must be one of timm, hf, local; got 'torchhub'" in text
    assert "`input_size` must be 3 positive integers [C, H, W]; got [3, 32]" in text
    assert "`crop_pct` must be in (0, 1]; got 1.5" in text
    assert "unknown field(s) ['colour']" in text
    assert "model #3 (id 'x'): duplicate id 'x' (first used by model #2)" in text


def test_missing_checkpoint_and_missing_file(tmp_path):
    path = _write(tmp_path, '[[model]]\nid = "a"\nsource = "local"\nname = "test_resnet"\ncheckpoint = "nope.pt"\n')
    with pytest.raises(CatalogueError, match=r"`checkpoint` file not found: .*nope.pt"):
        load_catalogue(path)
    assert load_catalogue(path, check_files=False)[0].checkpoint.name == "nope.pt"
    with pytest.raises(CatalogueError, match=r"catalogue 'missing.toml' not found"):
        load_catalogue("missing.toml")
    with pytest.raises(CatalogueError, match="not valid TOML"):
        load_catalogue(_write(tmp_path, "[[model]\n", "bad.toml"))
    with pytest.raises(CatalogueError, match=r"no \[\[model\]\] tables"):
        load_catalogue(_write(tmp_path, "", "empty.toml"))


def test_builtin_demo_catalogue():
    entries = load_catalogue("demo")
    assert len(entries) >= 12
    assert len({e.name for e in entries}) >= 4           # several architectures
    assert sum(e.checkpoint is not None for e in entries) >= 12
    assert any(not e.pretrained and e.checkpoint is None for e in entries)   # random baselines
