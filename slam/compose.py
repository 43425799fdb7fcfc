"""Compose ``params/`` (Hydra) into ``params.yaml``, as ``dvc exp run -S`` does.

``python -m slam.compose [override ...]`` rewrites params.yaml; ``dvc repro`` then runs the
stages whose params changed. A test keeps the committed params.yaml equal to this output.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from slam.config import to_config


def compose_params(overrides: list[str] | None = None, config_dir: str | Path = "params") -> str:
    with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base=None):
        cfg = compose(config_name="config", overrides=overrides or [])
    OmegaConf.resolve(cfg)  # as DVC does: a profile's ${corpus.language} lands as its value
    to_config(cfg)  # fail here, naming the key, if the composition breaks the schema
    return OmegaConf.to_yaml(cfg)


def main() -> None:
    Path("params.yaml").write_text(compose_params(sys.argv[1:]))


if __name__ == "__main__":
    main()
