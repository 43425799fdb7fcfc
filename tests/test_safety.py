"""Nothing in the code runs code that comes with data; weights are written as safetensors.

Loading a pickle (``torch.load`` without ``weights_only=True``, ``pickle``, ``yaml.load``
with an unsafe loader, ``numpy.load(allow_pickle=True)``) or a model's own Python
(``trust_remote_code=True``) executes whatever the file says. The sources of ``slam/`` and
``pipelines/`` are parsed (ast, so comments and strings do not count) and every such call is
reported with its file and line. ``trust_remote_code`` stays a config key, off by default,
that a user turns on for one model they trust.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from slam.decode.inference import export_merged
from slam.train.loop import CHECKPOINTS, MODEL, STATE, TRAINABLE, train

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted([*(REPO / "slam").rglob("*.py"), *(REPO / "pipelines").rglob("*.py")])

# Calls that unpickle (run code from the file) whatever their arguments.
PICKLE_LOADS = {
    "pickle.load", "pickle.loads", "pickle.Unpickler", "_pickle.load", "_pickle.loads",
    "cPickle.load", "cPickle.loads", "dill.load", "dill.loads", "cloudpickle.load",
    "cloudpickle.loads", "joblib.load", "pandas.read_pickle", "shelve.open", "marshal.load",
    "marshal.loads", "torch.serialization.load",
}  # fmt: skip
UNSAFE_YAML = {"yaml.unsafe_load", "yaml.unsafe_load_all", "yaml.full_load", "yaml.full_load_all"}
SAFE_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}
WEIGHT_SUFFIXES = {".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".joblib", ".npy", ".npz"}


def _aliases(tree: ast.Module) -> dict[str, str]:
    """Local name -> dotted origin, from the module's imports (``np`` -> ``numpy``)."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:  # import numpy.linalg as la: la -> numpy.linalg
                    names[alias.asname] = alias.name
                else:  # import os.path: binds os
                    top = alias.name.split(".")[0]
                    names[top] = top
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def _dotted(node: ast.AST, aliases: dict[str, str]) -> str:
    """``torch.load`` for ``torch.load``, ``th.load`` (import torch as th), ``load`` (from torch ...)."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return ""
    parts.append(aliases.get(node.id, node.id))
    return ".".join(reversed(parts))


def _is_true(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _keyword(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def unsafe_calls(source: str, filename: str = "<snippet>") -> list[str]:
    """``file:line: what`` for every unsafe call or literal in ``source``."""
    tree = ast.parse(source, filename)
    aliases = _aliases(tree)
    found = []
    for node in ast.walk(tree):
        where = f"{filename}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Dict):  # {"trust_remote_code": True, ...} passed as **kwargs
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and key.value == "trust_remote_code" and _is_true(value):
                    found.append(f"{where}: trust_remote_code=True")
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func, aliases)
        if _is_true(_keyword(node, "trust_remote_code")):
            found.append(f"{where}: trust_remote_code=True")
        if name in ("eval", "exec", "builtins.eval", "builtins.exec"):
            found.append(f"{where}: {name}()")
        elif name == "torch.load" and not _is_true(_keyword(node, "weights_only")):
            found.append(f"{where}: torch.load without weights_only=True")
        elif name in PICKLE_LOADS:
            found.append(f"{where}: {name} (unpickles)")
        elif name in ("numpy.load", "numpy.lib.npyio.load") and _is_true(_keyword(node, "allow_pickle")):
            found.append(f"{where}: numpy.load(allow_pickle=True)")
        elif name in UNSAFE_YAML:
            found.append(f"{where}: {name}")
        elif name in ("yaml.load", "yaml.load_all"):
            loader = _keyword(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
            loader_name = _dotted(loader, aliases).rsplit(".", 1)[-1] if loader is not None else ""
            if loader_name not in SAFE_LOADERS:
                found.append(f"{where}: {name} without SafeLoader")
    return found


@pytest.mark.parametrize(
    "snippet",
    [
        "import torch\nstate = torch.load('x.pt')",
        "import torch\nstate = torch.load('x.pt', weights_only=False)",
        "import torch as th\nstate = th.load('x.pt', map_location='cpu')",
        "from torch import load\nstate = load('x.pt')",
        "from transformers import AutoModel\nAutoModel.from_pretrained('m', trust_remote_code=True)",
        "kwargs = {'trust_remote_code': True}",
        "value = eval('1 + 1')",
        "exec('x = 1')",
        "import pickle\nobj = pickle.loads(data)",
        "import pickle as pk\nobj = pk.load(open('f', 'rb'))",
        "import joblib\nobj = joblib.load('m.joblib')",
        "import numpy as np\na = np.load('a.npy', allow_pickle=True)",
        "import yaml\ncfg = yaml.load(open('p.yaml'))",
        "import yaml\ncfg = yaml.load(open('p.yaml'), Loader=yaml.Loader)",
        "import yaml\ncfg = yaml.unsafe_load(text)",
        "import yaml\ncfg = yaml.full_load(text)",
    ],
)
def test_the_scan_catches(snippet: str) -> None:
    assert len(unsafe_calls(snippet)) == 1, snippet


@pytest.mark.parametrize(
    "snippet",
    [
        "import torch\nstate = torch.load('x.pt', weights_only=True)",
        "model.eval()",  # a method, not the builtin
        "AutoModel.from_pretrained('m', trust_remote_code=cfg.trust_remote_code)",
        "AutoModel.from_pretrained('m', trust_remote_code=False)",
        "import yaml\ncfg = yaml.safe_load(text)",
        "import yaml\ncfg = yaml.load(text, Loader=yaml.SafeLoader)",
        "import yaml\nfrom yaml import CSafeLoader\ncfg = yaml.load(text, CSafeLoader)",
        "import numpy as np\na = np.load('a.npy')",
        "import re\npattern = re.compile('x')",
    ],
)
def test_the_scan_lets_safe_calls_pass(snippet: str) -> None:
    assert unsafe_calls(snippet) == [], snippet


def test_sources_load_no_code_from_data() -> None:
    assert len(SOURCES) > 20  # the scan sees the package
    found = [hit for path in SOURCES for hit in unsafe_calls(path.read_text(), str(path.relative_to(REPO)))]
    assert found == [], "\n".join(found)


def _weight_files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.suffix in WEIGHT_SUFFIXES)


def test_trained_and_exported_weights_are_safetensors(tiny_cfg, tiny_models, tmp_path) -> None:
    tiny_cfg.train.use_cache = False  # no cache stage needed: the encoder runs in the step
    tiny_cfg.train.max_steps = 2
    train(tiny_cfg)
    exp = Path(tiny_cfg.train.dir)
    assets = exp / MODEL
    assert _weight_files(assets) == []
    assert list(assets.rglob("*.safetensors"))
    # checkpoints: the trainable weights as safetensors; the optimizer state is the one .pt,
    # and it loads with weights_only=True (tensors and plain values: nothing to execute)
    for ckpt in (exp / CHECKPOINTS).glob("step-*"):
        assert (ckpt / TRAINABLE).exists()
        assert _weight_files(ckpt) == [STATE]
        state = torch.load(ckpt / STATE, weights_only=True)
        assert set(state) >= {"optimizer", "scheduler", "rng"}
    # the merged export and the tiny zoo-style models too
    exported = export_merged(assets, tmp_path / "exported")
    assert _weight_files(exported) == [] and list(exported.rglob("*.safetensors"))
    for model_dir in tiny_models.values():
        assert _weight_files(model_dir) == [] and list(model_dir.rglob("*.safetensors"))
