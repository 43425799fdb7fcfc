"""DVC stage `cache`: reads params.yaml and calls `slam.data.cache.build_cache`."""

from slam.stages import run_stage

if __name__ == "__main__":
    run_stage("slam.data.cache:build_cache")  # imported inside, so Ctrl-C there is caught
