"""DVC stage `train`: reads params.yaml and calls `slam.train.loop.train`."""

from slam.stages import run_stage

if __name__ == "__main__":
    run_stage("slam.train.loop:train")  # imported inside, so Ctrl-C there is caught
