"""DVC stage `baseline`: reads params.yaml and calls `slam.decode.decode_baseline`."""

from slam.decode import decode_baseline
from slam.stages import run_stage

if __name__ == "__main__":
    run_stage(decode_baseline)
