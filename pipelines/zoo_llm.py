"""DVC stage `zoo_llm`: reads params.yaml and calls `slam.zoo.build_llm_zoo`."""

from slam.stages import run_stage
from slam.zoo import build_llm_zoo

if __name__ == "__main__":
    run_stage(build_llm_zoo)
