"""DVC stage `decode`: reads params.yaml and calls `slam.decode.decode`."""

from slam.stages import run_stage

if __name__ == "__main__":
    run_stage("slam.decode:decode")  # imported inside, so Ctrl-C there is caught
