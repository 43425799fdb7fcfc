"""DVC stage `zoo`: reads params.yaml and calls `slam.zoo.build_zoo`."""

from slam.stages import run_stage
from slam.zoo import build_zoo

if __name__ == "__main__":
    run_stage(build_zoo)
