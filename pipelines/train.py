"""DVC stage `train`: reads params.yaml and calls `slam.train.train`."""

from slam.stages import run_stage

if __name__ == "__main__":
    run_stage("slam.train:train")  # imported inside, so Ctrl-C there is caught
