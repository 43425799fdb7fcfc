"""DVC stage `baseline`: reads params.yaml and calls `slam.decode.stage.decode_baseline`."""

from slam.stages import run_stage

if __name__ == "__main__":
    run_stage("slam.decode.stage:decode_baseline")  # imported inside, so Ctrl-C there is caught
