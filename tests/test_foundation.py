"""gptlib.device, gptlib.viz and gptlib.checks: the pieces every chapter leans on."""
from __future__ import annotations

import os
import subprocess
import sys

import matplotlib.pyplot as plt
import pytest
import torch

from gptlib import checks, device, viz


def test_get_device_prefers_cuda_then_cpu(monkeypatch):
    monkeypatch.delenv("GPTLIB_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else None
    dev = device.get_device()
    if expected:
        assert dev.type == "cuda"
    else:
        assert dev.type in {"cpu", "mps"}
    monkeypatch.setenv("GPTLIB_DEVICE", "cpu")
    assert device.get_device().type == "cpu"


def test_autocast_is_bf16_on_cuda_and_a_noop_on_cpu():
    assert device.autocast_dtype("cpu") is None
    assert device.autocast_dtype("cuda") is torch.bfloat16
    with device.autocast("cpu"):
        y = torch.ones(2, 2) @ torch.ones(2, 2)
    assert y.dtype == torch.float32


def test_seed_everything_reproduces_random_draws():
    device.seed_everything(123)
    a = torch.randn(5)
    device.seed_everything(123)
    assert torch.equal(a, torch.randn(5))


@pytest.mark.parametrize("value,expected", [("1", True), ("0", False), ("true", True)])
def test_fast_flag_follows_the_environment(value, expected):
    code = "from gptlib.device import FAST; print(FAST)"
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, GPTLIB_FAST=value),
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == str(expected)


def test_import_gptlib_is_cheap():
    """`import gptlib` must not import torch (chapters and the CLI start faster)."""
    code = "import sys, gptlib; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_explore_static_renders_one_frame_per_setting(monkeypatch):
    monkeypatch.setenv("GPTLIB_STATIC", "1")
    calls = []

    def render(a, b):
        calls.append((a, b))
        fig, ax = plt.subplots()
        ax.plot([0, a], [0, b])
        return fig

    out = viz.explore(render, title="demo", a=[1, 2, 3], b=["x", "y"])
    html = out.data
    assert len(calls) == 6
    assert html.count('type="radio"') == 6 and html.count("data:image/png;base64,") == 6
    assert html.count(" checked>") == 1 and "a=3, b=y" in html


def test_explore_refuses_too_many_frames(monkeypatch):
    monkeypatch.setenv("GPTLIB_STATIC", "1")
    with pytest.raises(ValueError, match="at most"):
        viz.explore(lambda a: plt.figure(), a=list(range(viz.MAX_FRAMES + 1)))


def test_explore_live_builds_widgets(monkeypatch):
    monkeypatch.setenv("GPTLIB_STATIC", "0")
    box = viz.explore(lambda t: plt.figure(), title="t", t=[0.5, 1.0, 2.0, 4.0])
    import ipywidgets as w

    assert isinstance(box, w.VBox)
    assert any(isinstance(c, w.SelectionSlider) for c in box.children)


def test_plot_attention_and_losses_draw():
    fig = viz.plot_attention(torch.softmax(torch.randn(3, 3), -1), ["a", "b", "c"], title="w")
    assert len(fig.axes[0].texts) == 9
    plt.close(fig)
    history = [{"iter": i, "train_loss": 3 - i / 10, "val_loss": (3 - i / 10) if i % 5 == 0 else None}
               for i in range(20)]
    fig = viz.plot_losses(history)
    assert len(fig.axes[0].lines) == 2
    plt.close(fig)


def test_live_loss_plot_collects_history(monkeypatch):
    monkeypatch.setenv("GPTLIB_STATIC", "1")
    plot = viz.LiveLossPlot(every=2)
    for i in range(5):
        plot({"iter": i, "train_loss": 1.0 / (i + 1)})
    assert len(plot.history) == 5
    plt.close(plot.show())


def test_check_softmax_accepts_a_correct_answer():
    def good(x):
        e = (x - x.max(-1, keepdim=True).values).exp()
        return e / e.sum(-1, keepdim=True)

    assert "correct" in checks.check_softmax(good)


@pytest.mark.parametrize("bad,message", [
    (lambda x: x.exp() / x.exp().sum(), "sum to 1"),
    (lambda x: x.exp() / x.exp().sum(-1, keepdim=True), "overflow"),
    (lambda x: torch.softmax(x, 0), "dim=-1"),
    (lambda x: x.tolist(), "torch.Tensor"),
])
def test_check_softmax_explains_wrong_answers(bad, message):
    with pytest.raises(checks.CheckFailed, match=message):
        checks.check_softmax(bad)


def test_check_close_reports_shape_and_size_of_error():
    with pytest.raises(checks.CheckFailed, match="shape"):
        checks.check_close(torch.zeros(2), torch.zeros(3), "x")
    with pytest.raises(checks.CheckFailed, match="differ by up to 0.5"):
        checks.check_close(torch.zeros(2), torch.tensor([0.0, 0.5]), "x")
    with pytest.raises(checks.CheckFailed):
        checks.check_close(torch.tensor([float("nan")]), torch.tensor([0.0]), "x")


def test_environment_yml_mirrors_pyproject():
    """The conda route must install what the pip route installs (same names, same bounds)."""
    from pathlib import Path

    import tomllib

    root = Path(__file__).resolve().parent.parent
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        wanted |= set(extra)
    env_lines = {line.strip().lstrip("- ").strip() for line in (root / "environment.yml").read_text().splitlines()}
    missing = sorted(d for d in wanted if d not in env_lines and not d.startswith("torch>="))
    assert not missing, f"environment.yml lacks {missing} (keep it in step with pyproject.toml)"


def test_glossary_terms_appear_in_their_chapter():
    """book/terms.yml is the glossary's source: each Chinese term must really be in its chapter."""
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parent.parent
    terms = yaml.safe_load((root / "book" / "terms.yml").read_text(encoding="utf-8"))
    assert len(terms) >= 30
    for term in terms:
        chapter = (root / "chapters" / f"{term['chapter']}.md").read_text(encoding="utf-8")
        first_zh = term["zh"].split(" / ")[0]
        assert first_zh in chapter, f"{term['zh']} ({term['en']}) not found in {term['chapter']}.md"


def test_glossary_and_bibliography_have_no_duplicates():
    """Chapters append to book/terms.yml and book/references.bib: each term and key once."""
    import re
    from collections import Counter
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parent.parent
    terms = yaml.safe_load((root / "book" / "terms.yml").read_text(encoding="utf-8"))
    for field in ("en", "zh"):
        repeated = [t for t, n in Counter(term[field] for term in terms).items() if n > 1]
        assert not repeated, f"book/terms.yml lists these {field} terms twice: {repeated}"
    keys = re.findall(r"^@\w+\{([^,]+),", (root / "book" / "references.bib").read_text(encoding="utf-8"), re.M)
    repeated = [k for k, n in Counter(keys).items() if n > 1]
    assert not repeated, f"book/references.bib defines these keys twice: {repeated}"
