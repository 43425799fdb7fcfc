"""DVC stage `score`: reads params.yaml and calls `slam.score.score`."""

from slam.stages import run_stage

if __name__ == "__main__":
    run_stage("slam.score:score")  # imported inside, so Ctrl-C there is caught
