"""DVC stage `score`: reads params.yaml and calls `slam.score.stage.score`."""

from slam.stages import run_stage

if __name__ == "__main__":
    run_stage("slam.score.stage:score")  # imported inside, so Ctrl-C there is caught
