"""DVC stage `cache`: reads params.yaml and calls `slam.cache.build_cache`."""

from slam.cache import build_cache
from slam.stages import run_stage

if __name__ == "__main__":
    run_stage(build_cache)
