"""The executed-chapter cache is thrown away whenever anything a chapter depends on changes."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def key(root: Path) -> str:
    return subprocess.run(["make", "-s", "-C", str(root), "cache-key"], capture_output=True,
                          text=True, check=True).stdout.strip()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A miniature checkout: the real Makefile and one file in each place a chapter reads."""
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    for rel in ("gptlib/__init__.py", "gptlib/rlhf/ppo.py", "gptlib/checks/icl.py",
                "gptlib/configs/pretrain.toml", "assets/rlhf/sft/meta.json",
                "chapters/13_rlhf_ppo.md", "book/_config.yml", "book/_toc.yml", "pyproject.toml"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(f"# {rel}\n")
    return tmp_path


@pytest.mark.parametrize("rel", ["gptlib/rlhf/ppo.py", "gptlib/checks/icl.py",
                                 "gptlib/configs/pretrain.toml", "assets/rlhf/sft/meta.json",
                                 "chapters/13_rlhf_ppo.md", "gptlib/rlhf/new_module.py"])
def test_touching_a_dependency_changes_the_key(tree: Path, rel: str):
    before = key(tree)
    assert key(tree) == before  # stable when nothing changed
    path = tree / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write("# edited\n")
    assert key(tree) != before, f"editing {rel} must invalidate the executed chapters"


def test_bytecode_does_not_change_the_key(tree: Path):
    before = key(tree)
    (tree / "gptlib/rlhf/__pycache__").mkdir()
    (tree / "gptlib/rlhf/__pycache__/ppo.cpython-311.pyc").write_bytes(b"\0")
    assert key(tree) == before
