"""Compose ``conf/`` into a params dict exactly as ``dvc exp run -S`` does (Hydra + OmegaConf.resolve).

``python -m zs3core.compose [override ...] > params.yaml`` regenerates params.yaml from the
defaults (or with overrides such as ``dataset=camvid scale=cpu source=local``).
"""
from __future__ import annotations

import sys
from pathlib import Path


def compose(overrides: list[str] | None = None, config_dir: str | Path = "conf") -> str:
    """The YAML text DVC would write to params.yaml for these Hydra overrides."""
    from hydra import compose as hcompose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(str(Path(config_dir).resolve()), version_base=None):
        cfg = hcompose(config_name="config", overrides=list(overrides or []))
    OmegaConf.resolve(cfg)
    return OmegaConf.to_yaml(cfg)


if __name__ == "__main__":
    sys.stdout.write(compose(sys.argv[1:]))
