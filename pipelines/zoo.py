"""DVC stage `zoo`: reads params.yaml and calls `slam.zoo.build_zoo`."""

from slam.stages import run_stage

if __name__ == "__main__":
    run_stage("slam.zoo:build_zoo")  # imported inside, so Ctrl-C there is caught
