"""DVC stage `train`: reads params.yaml and calls `slam.train.train`."""

from slam.stages import run_stage
from slam.train import train

if __name__ == "__main__":
    run_stage(train)
