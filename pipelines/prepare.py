"""DVC stage `prepare`: reads params.yaml and calls `slam.data.corpora.prepare_corpus`."""

from slam.stages import run_stage

if __name__ == "__main__":
    run_stage("slam.data.corpora:prepare_corpus")  # imported inside, so Ctrl-C there is caught
