"""DVC stage `decode`: reads params.yaml and calls `slam.decode.stage.decode`."""

from slam.stages import run_stage

if __name__ == "__main__":
    run_stage("slam.decode.stage:decode")  # imported inside, so Ctrl-C there is caught
