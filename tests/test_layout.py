"""The package's shape, held by the test run as the import layers are by lint-imports: files stay
readable in one sitting, and no module reaches into another's private names."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "zooforge"
MAX_LINES = 350


def _sources():
    return sorted(p for p in SRC.rglob("*.py"))


def test_no_source_file_is_over_350_lines():
    long = {str(p.relative_to(SRC)): n for p in _sources() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these by concern: {long}"


def _private_imports(source: str, package: str) -> list[str]:
    """In a module of ``package``: ``from zooforge.a import _b``, and imports of another package's
    private module (``metrics._validation`` from inside ``zooforge.metrics`` is package-private: fine)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("zooforge"):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"{node.module}.{alias.name}")
            parts = node.module.split(".")
            private = [i for i, part in enumerate(parts) if part.startswith("_") and not part.startswith("__")]
            if private and ".".join(parts[:private[0]]) != package:
                found.append(node.module)
    return found


def test_no_module_imports_another_modules_private_names():
    reached = {str(p.relative_to(SRC)): names for p in _sources()
               if (names := _private_imports(p.read_text(), ".".join(("zooforge", *p.relative_to(SRC).parent.parts))))}
    assert not reached, f"make these public where they are defined, or move them: {reached}"


def test_the_private_import_check_sees_a_private_name():
    # the check above must be able to fail
    source = "from zooforge.zoo.readers import _hash_files\nfrom zooforge.metrics._torch import onehot\n"
    assert _private_imports(source, "zooforge.zoo") == ["zooforge.zoo.readers._hash_files", "zooforge.metrics._torch"]
    assert _private_imports("from zooforge.metrics._torch import onehot\n", "zooforge.metrics") == []
