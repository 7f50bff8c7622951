"""A throwaway Asterisk 22 for development, tests and CI: Debian sid in a chroot, on loopback.

The root filesystem is built once with mmdebstrap (about 30 s) and cached at
~/.cache/ivr/sandbox/rootfs. Each running instance gets its own directories under
/srv/ivr/<name>/ inside it (config, run, spool, logs, astdb, sounds, recordings) and its own
AMI port, so several instances (several test sessions) can run at once.

Asterisk runs in a private mount namespace (`unshare --mount`) where /proc is mounted for it
alone: the mount disappears with the process, so a crash or a SIGKILL leaves nothing mounted
on the host and one instance's teardown never touches another's.

Configuration comes from the project's asterisk/ files (the ones ops install), with only the
values a sandbox must change rendered in (ports, directories, the AMI secret).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pydantic import SecretStr

from ivr.audio.pcm import read_wav, write_wav
from ivr.config import PROJECT_ROOT, AmiSettings
from ivr.errors import IvrError
from ivr.telephony.ami import AmiClient, AmiEvent

log = logging.getLogger(__name__)

CACHE_DIR = Path(os.path.expanduser("~/.cache/ivr/sandbox"))
ROOTFS = CACHE_DIR / "rootfs"
STATE_DIR = CACHE_DIR / "instances"
TEMPLATES = PROJECT_ROOT / "asterisk"
INSTANCES_IN_CHROOT = "/srv/ivr"
ASTERISK = "/usr/sbin/asterisk"
MIRROR = "http://deb.debian.org/debian"
SUITE = "sid"
PACKAGES = ("asterisk", "asterisk-modules")
DEFAULT_BOOT_TIMEOUT_S = 60.0
DEFAULT_STOP_TIMEOUT_S = 10.0
AMI_USER = "ivr"
# test-friendly dialplan defaults (the production values live in asterisk/extensions.conf)
# a live line with one (simulated) agent, so tests see what the agent's side of a hand-off receives
SANDBOX_QUEUES = """
; sandbox only
[support-staffed]
strategy=ringall
timeout=10
joinempty=yes
member => Local/s@ivr-test-agent/n
"""
SANDBOX_GLOBALS = {"IVR_MENU_WAIT": "2", "IVR_QUEUE_TIMEOUT": "3", "IVR_MENU_PROMPT": "beep"}
TEST_CALLER = "Local/s@ivr-test-caller/n"
HOST_MOH = Path("/usr/share/asterisk/moh")  # Debian asterisk-moh-opsound-wav (install.sh)


class SandboxError(IvrError):
    """The sandbox Asterisk cannot be built, started, reached or stopped."""


# ------------------------------------------------------------------------------ config rendering


def set_option(text: str, section: str, key: str, value: str) -> str:
    """Set `key` in `[section]` of an Asterisk .conf text (replace the line or add it).

    Keeps everything else, comments included, so the rendered file stays the ops file.
    Handles both `key = value` and `key => value` styles.
    """
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == f"[{section}]"), None)
    if start is None:
        return text.rstrip("\n") + f"\n\n[{section}]\n{key} = {value}\n"
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("[")), len(lines))
    pattern = re.compile(rf"^\s*{re.escape(key)}\s*(=>|=)")
    for i in range(start + 1, end):
        match = pattern.match(lines[i])
        if match:
            lines[i] = f"{key} {match.group(1)} {value}"
            return "\n".join(lines) + "\n"
    insert_at = end
    while insert_at > start + 1 and not lines[insert_at - 1].strip():
        insert_at -= 1
    lines.insert(insert_at, f"{key} = {value}")
    return "\n".join(lines) + "\n"


def _free_port(host: str = "127.0.0.1", kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


# ----------------------------------------------------------------------------------------- rootfs


def check_root() -> None:
    if os.geteuid() != 0:
        raise SandboxError(
            "the sandbox Asterisk needs root (chroot, mount namespaces)",
            fix="run as root, e.g. `sudo ivr sandbox up`",
        )


def ensure_rootfs(rootfs: Path = ROOTFS) -> Path:
    """Return the cached rootfs, building it with mmdebstrap if missing (one builder at a time)."""
    if (rootfs / ASTERISK.lstrip("/")).exists():
        return rootfs
    check_root()
    if shutil.which("mmdebstrap") is None:
        raise SandboxError("mmdebstrap is not installed", fix="apt-get install -y mmdebstrap")
    rootfs.parent.mkdir(parents=True, exist_ok=True)
    with open(rootfs.parent / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building it right now
        if (rootfs / ASTERISK.lstrip("/")).exists():
            return rootfs
        tmp = rootfs.parent / f"rootfs.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        command = [
            "mmdebstrap", "--variant=apt", "--aptopt=Acquire::Check-Valid-Until \"false\"",
            f"--include={','.join(PACKAGES)}", SUITE, str(tmp), MIRROR,
        ]
        log.warning("building the sandbox rootfs (about 30 s): %s", " ".join(command))
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0 or not (tmp / ASTERISK.lstrip("/")).exists():
            shutil.rmtree(tmp, ignore_errors=True)
            raise SandboxError(
                f"mmdebstrap failed ({result.returncode}): {result.stderr.strip()[-800:]}",
                fix=f"check network access to {MIRROR}, then retry",
            )
        if rootfs.exists():
            shutil.rmtree(rootfs)
        tmp.rename(rootfs)
    return rootfs


# -------------------------------------------------------------------------------------- instances


@dataclass
class SandboxInfo:
    """What `ivr sandbox status` and other processes need to find a running instance."""

    name: str
    pid: int
    rootfs: str
    ami_port: int
    agi_port: int
    audiosocket_port: int
    host: str = "127.0.0.1"
    sip_port: int = 0  # UDP, loopback: the provider trunk of pjsip.conf answers SIP here
    started_at: float = field(default_factory=time.time)

    @property
    def conf_in_chroot(self) -> str:
        return f"{INSTANCES_IN_CHROOT}/{self.name}/etc/asterisk.conf"

    @property
    def secret_file(self) -> Path:
        return STATE_DIR / f"{self.name}.secret"


def _process_is_instance(pid: int, conf_in_chroot: str) -> bool:
    """True if `pid` is alive and is the Asterisk started with this instance's config."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return conf_in_chroot.encode() in cmdline


class Sandbox:
    """One running Asterisk instance. Use `Sandbox.start(...)`; stop with `.stop()` (or `with`)."""

    def __init__(self, info: SandboxInfo, secret: str, process: subprocess.Popen[bytes] | None = None) -> None:
        self.info = info
        self.ami_secret = secret
        self._process = process

    # lifecycle ---------------------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        *,
        agi_port: int = 4573,
        audiosocket_port: int = 9092,
        extra_dialplan: str = "",
        name: str | None = None,
        ami_port: int | None = None,
        globals_: dict[str, str] | None = None,
        asterisk_options: dict[str, str] | None = None,
        rootfs: Path | None = None,
        boot_timeout_s: float = DEFAULT_BOOT_TIMEOUT_S,
        detach: bool = False,
        ami_secret: str | None = None,
    ) -> Sandbox:
        """Render the config, start Asterisk, wait until it is fully booted.

        `agi_port` is where the dialplan's AGI() will dial the bridge (127.0.0.1);
        `audiosocket_port` is only recorded (the bridge tells Asterisk where to connect).
        `globals_` overrides extensions.conf [globals]; `asterisk_options` asterisk.conf [options]
        (e.g. {"transmit_silence": "no"} to see what happens without it).
        `detach=True` lets the instance outlive this process (`ivr sandbox up`).
        `ami_secret` replaces the random AMI secret (tests of what a known secret does).
        """
        check_root()
        root = ensure_rootfs(rootfs or ROOTFS)
        prune_stale(root)
        name = name or f"t{os.getpid()}-{uuid.uuid4().hex[:6]}"
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", name):
            raise SandboxError(f"bad sandbox name {name!r}", fix="use letters, digits, - and _")
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        existing = load_info(name)
        if existing and _process_is_instance(existing.pid, existing.conf_in_chroot):
            raise SandboxError(f"sandbox {name!r} is already running (pid {existing.pid})",
                               fix=f"`ivr sandbox down --name {name}` first")
        info = SandboxInfo(
            name=name, pid=0, rootfs=str(root), ami_port=ami_port or _free_port(),
            agi_port=agi_port, audiosocket_port=audiosocket_port,
            sip_port=_free_port(kind=socket.SOCK_DGRAM),
        )
        secret = ami_secret or secrets.token_urlsafe(18)
        sandbox = cls(info, secret)
        sandbox._write_config(extra_dialplan, {**SANDBOX_GLOBALS, **(globals_ or {})}, asterisk_options or {})
        console = open(sandbox.host_path("log/console.log"), "wb")
        command = [
            "unshare", "--mount", "--propagation", "private", "sh", "-c",
            # proc exists only in this namespace; exec chains so the pid we hold is Asterisk's
            'mount -t proc proc "$1/proc" && exec chroot "$1" "$2" -f -n -C "$3"',
            "sandbox", str(root), ASTERISK, info.conf_in_chroot,
        ]
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                                   start_new_session=detach)
        console.close()
        sandbox._process = process
        info.pid = process.pid
        (STATE_DIR / f"{name}.json").write_text(json.dumps(asdict(info)))
        fd = os.open(info.secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secret + "\n")
        try:
            sandbox._wait_booted(boot_timeout_s)
        except BaseException:
            sandbox.stop()
            raise
        log.info("sandbox %s: Asterisk ready, AMI on 127.0.0.1:%d", name, info.ami_port)
        return sandbox

    @classmethod
    def attach(cls, name: str) -> Sandbox:
        """A handle on an instance started by another process (`ivr sandbox up`)."""
        info = load_info(name)
        if info is None or not _process_is_instance(info.pid, info.conf_in_chroot):
            raise SandboxError(f"no running sandbox named {name!r}", fix="start one with `ivr sandbox up`")
        return cls(info, info.secret_file.read_text().strip())

    def _wait_booted(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        ctl = self.host_path("run/asterisk.ctl")
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise SandboxError(
                    f"Asterisk exited with code {self._process.returncode} while booting: "
                    f"{self.console_log()[-1500:]}",
                    fix=f"see {self.host_path('log')} for details",
                )
            if ctl.exists():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    result = self._rx("core waitfullybooted", timeout_s=max(1.0, deadline - time.monotonic()))
                    if result.returncode == 0 and "fully booted" in result.stdout:
                        return
            time.sleep(0.1)
        raise SandboxError(f"Asterisk did not finish booting within {timeout_s:.0f} s",
                           fix=f"see {self.host_path('log/console.log')}")

    def is_running(self) -> bool:
        if self._process is not None:
            return self._process.poll() is None
        return _process_is_instance(self.info.pid, self.info.conf_in_chroot)

    def stop(self, timeout_s: float = DEFAULT_STOP_TIMEOUT_S, *, keep_files: bool = False) -> None:
        """Stop this instance only (by its pid, checked against its config path) and clean up."""
        if self.is_running():
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._rx("core stop now", timeout_s=timeout_s)
            if not self._wait_exit(timeout_s):
                self._signal(signal.SIGTERM)
                if not self._wait_exit(timeout_s):
                    self._signal(signal.SIGKILL)
                    self._wait_exit(timeout_s)
        if not keep_files:
            shutil.rmtree(self.host_path(""), ignore_errors=True)
        for suffix in (".json", ".secret"):
            with contextlib.suppress(FileNotFoundError):
                (STATE_DIR / f"{self.info.name}{suffix}").unlink()

    def _signal(self, signum: int) -> None:
        if _process_is_instance(self.info.pid, self.info.conf_in_chroot):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.info.pid, signum)

    def _wait_exit(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process is not None:
                try:
                    self._process.wait(timeout=0.1)
                    return True
                except subprocess.TimeoutExpired:
                    continue
            if not _process_is_instance(self.info.pid, self.info.conf_in_chroot):
                return True
            time.sleep(0.1)
        return False

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # paths and files ---------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def ami_port(self) -> int:
        return self.info.ami_port

    @property
    def dir_in_chroot(self) -> str:
        return f"{INSTANCES_IN_CHROOT}/{self.info.name}"

    def host_path(self, path: str) -> Path:
        """Host path of `path`: absolute paths are inside the chroot, relative ones inside this instance."""
        if not path.startswith("/"):
            path = f"{self.dir_in_chroot}/{path}" if path else self.dir_in_chroot
        return Path(self.info.rootfs) / path.lstrip("/")

    def console_log(self) -> str:
        try:
            return self.host_path("log/console.log").read_text(errors="replace")
        except OSError:
            return ""

    def _write_config(self, extra_dialplan: str, globals_: dict[str, str], options: dict[str, str]) -> None:
        base = self.dir_in_chroot
        for sub in ("etc", "run", "spool", "log", "db", "lib", "sounds", "recordings"):
            self.host_path(sub).mkdir(parents=True, exist_ok=True)
        etc = self.host_path("etc")
        templates = {name: (TEMPLATES / name).read_text() for name in (
            "asterisk.conf", "modules.conf", "extensions.conf", "manager.conf", "queues.conf",
            "extensions_test_caller.conf", "pjsip.conf", "rtp.conf", "musiconhold.conf")}
        conf = templates["asterisk.conf"]
        for key, sub in (("astetcdir", "etc"), ("astrundir", "run"), ("astspooldir", "spool"),
                         ("astlogdir", "log"), ("astdbdir", "db"), ("astvarlibdir", "lib")):
            conf = set_option(conf, "directories", key, f"{base}/{sub}")
        conf = set_option(conf, "options", "verbose", "3")
        for key, value in options.items():
            conf = set_option(conf, "options", key, value)
        (etc / "asterisk.conf").write_text(conf)
        manager = templates["manager.conf"]
        manager = set_option(manager, "general", "port", str(self.info.ami_port))
        manager = set_option(manager, "general", "bindaddr", "127.0.0.1")
        manager = set_option(manager, AMI_USER, "secret", self.ami_secret)
        (etc / "manager.conf").write_text(manager)
        dialplan = templates["extensions.conf"]
        dialplan = set_option(dialplan, "globals", "IVR_AGI", f"agi://127.0.0.1:{self.info.agi_port}")
        for key, value in globals_.items():
            dialplan = set_option(dialplan, "globals", key, value)
        dialplan += "\n#include extensions_test_caller.conf\n" + (extra_dialplan and f"\n{extra_dialplan}\n")
        (etc / "extensions.conf").write_text(dialplan)
        for name in ("modules.conf", "extensions_test_caller.conf"):
            (etc / name).write_text(templates[name])
        (etc / "queues.conf").write_text(templates["queues.conf"] + SANDBOX_QUEUES)
        (etc / "pjsip.conf").write_text(self._render_pjsip(templates["pjsip.conf"]))
        (etc / "rtp.conf").write_text(templates["rtp.conf"])
        (etc / "musiconhold.conf").write_text(set_option(
            templates["musiconhold.conf"], "default", "directory", self._install_moh()))
        # distro defaults the project has no opinion on (ringing/busy tones per country)
        distro = Path(self.info.rootfs) / "etc/asterisk"
        for name in ("indications.conf",):
            if (distro / name).exists():
                shutil.copy(distro / name, etc / name)
        (etc / "logger.conf").write_text(
            "; sandbox only\n[general]\n[logfiles]\nconsole => notice,warning,error,verbose\n"
            "messages.log => notice,warning,error,verbose\n"
        )

    def _render_pjsip(self, text: str) -> str:
        """pjsip.conf with the trunk on loopback: SIP on this instance's UDP port, the provider at
        127.0.0.1 (SIPp plays it), no keep-alive OPTIONS to a provider that is not there."""
        text = set_option(text, "transport-udp", "bind", f"127.0.0.1:{self.info.sip_port}")
        text = set_option(text, "provider-identify", "match", "127.0.0.1")
        text = set_option(text, "provider-aor", "contact", "sip:127.0.0.1:5060")
        return set_option(text, "provider-aor", "qualify_frequency", "0")

    def _install_moh(self) -> str:
        """Music on hold for this instance: the host's Debian music (asterisk-moh-opsound-wav) if
        installed (else none, with a warning); returns the in-chroot directory."""
        moh = self.host_path("moh")
        moh.mkdir(parents=True, exist_ok=True)
        music = sorted(HOST_MOH.glob("*.wav"))[:1]
        for source in music:  # one piece is enough for a test; each is ~3 MB
            with contextlib.suppress(FileExistsError):
                try:
                    os.link(source, moh / source.name)
                except OSError:
                    shutil.copy(source, moh / source.name)
        if not music:
            log.warning("no music on hold in %s (apt-get install asterisk-moh-opsound-wav): "
                        "callers waiting in the sandbox hear silence", HOST_MOH)
        return f"{self.dir_in_chroot}/moh"

    def install_sound(self, path: str | Path, name: str | None = None) -> str:
        """Copy a WAV (any rate; converted to 8 kHz mono 16-bit) into this instance's sounds.

        Returns the name to give Playback()/Background() (an absolute path without extension).
        """
        source = Path(path)
        stem = name or source.stem
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", stem):
            raise SandboxError(f"bad sound name {stem!r}", fix="use letters, digits, ., - and _")
        write_wav(self.host_path(f"sounds/{stem}.wav"), read_wav(source))
        return f"{self.dir_in_chroot}/sounds/{stem}"

    async def originate_test_call(
        self,
        ami: AmiClient,
        caller_sounds: list[str],
        flow: str = "support",
        record_as: str = "",
        *,
        lang: str = "en",
        delay_s: float = 0.5,
        wait_s: float = 5.0,
        dtmf: str = "",
        variables: dict[str, str] | None = None,
    ) -> SandboxCall:
        """Start a whole call inside Asterisk: a Local channel whose caller side says `caller_sounds`
        (names from `install_sound`), presses `dtmf`, listens `wait_s` s, recording what it hears as
        `record_as` (host file: `SandboxCall.heard_wav`); the other side enters [ivr] with `flow`.
        `variables` may override dialplan globals for this call only (e.g. IVR_AGI)."""
        call = SandboxCall(
            caller_uniqueid=str(uuid.uuid4()), ivr_uniqueid=str(uuid.uuid4()),
            heard_wav=self.host_path(self.recording_path(record_as) + ".wav") if record_as else None,
            ami=ami,
        )
        call._hangup = ami.expect_event(
            lambda e: e.name == "Hangup" and e.get("Uniqueid") == call.caller_uniqueid)
        channel_vars = {
            "IVR_FLOW": flow, "IVR_LANG": lang, "IVR_TEST_SOUNDS": "&".join(caller_sounds),
            "IVR_TEST_RECORD": self.recording_path(record_as) if record_as else "",
            "IVR_TEST_DELAY": str(delay_s), "IVR_TEST_WAIT": str(wait_s), "IVR_TEST_DTMF": dtmf,
            **(variables or {}),
        }
        await ami.originate(TEST_CALLER, "ivr", "s", 1, variables=channel_vars,
                            channel_id=call.ivr_uniqueid, other_channel_id=call.caller_uniqueid)
        return call

    def recording_path(self, name: str) -> str:
        """In-chroot path (without .wav) for a recording called `name` in this instance."""
        return f"{self.dir_in_chroot}/recordings/{name}"

    # control -----------------------------------------------------------------------------------

    def _rx(self, command: str, timeout_s: float = 10.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["chroot", self.info.rootfs, ASTERISK, "-C", self.info.conf_in_chroot, "-rx", command],
            capture_output=True, text=True, timeout=timeout_s,
        )

    def cli(self, command: str, timeout_s: float = 10.0) -> str:
        """Run an Asterisk CLI command on this instance and return its output."""
        result = self._rx(command, timeout_s)
        if result.returncode != 0:
            raise SandboxError(f"CLI {command!r} failed: {(result.stderr or result.stdout).strip()}")
        return result.stdout

    def endpoints(self) -> dict[str, str]:
        return {
            "AMI": f"127.0.0.1:{self.info.ami_port} (user {AMI_USER}, secret in {self.info.secret_file})",
            "AGI (dialplan dials the bridge at)": f"agi://127.0.0.1:{self.info.agi_port}",
            "AudioSocket (bridge listens, suggested)": f"127.0.0.1:{self.info.audiosocket_port}",
            "SIP (UDP; the provider trunk, from 127.0.0.1)": f"sip:127.0.0.1:{self.info.sip_port}",
            "config": str(self.host_path("etc")),
            "logs": str(self.host_path("log")),
        }

    def ami_settings(self) -> AmiSettings:
        """AMI settings pointing at this instance (for AmiClient)."""
        return AmiSettings(enabled=True, host="127.0.0.1", port=self.info.ami_port, username=AMI_USER,
                           secret=SecretStr(self.ami_secret))


@dataclass
class SandboxCall:
    """A call started by `Sandbox.originate_test_call`."""

    caller_uniqueid: str  # the simulated caller's half (Local ...;2)
    ivr_uniqueid: str  # the half that runs [ivr] (Local ...;1): the AGI channel
    heard_wav: Path | None  # what the caller heard (complete once the call has ended)
    ami: AmiClient
    _hangup: asyncio.Future[AmiEvent] | None = None

    async def wait_ended(self, timeout: float) -> None:
        """Wait until the caller's side has hung up (and the recording is closed)."""
        assert self._hangup is not None
        await asyncio.wait_for(self._hangup, timeout)
        if self.heard_wav is not None:  # MixMonitor closes its files right after the hang-up
            for _ in range(50):
                if self.heard_wav.exists() and self.heard_wav.stat().st_size > 44:
                    break
                await asyncio.sleep(0.1)


def prune_stale(rootfs: Path = ROOTFS) -> list[str]:
    """Remove what killed test sessions left behind: instances named ``t<pid>-...`` (the default
    name) whose creating process is gone and whose Asterisk is not running. Returns their names."""
    removed = []
    base = rootfs / INSTANCES_IN_CHROOT.lstrip("/")
    for path in base.glob("t*-*") if base.exists() else []:
        match = re.fullmatch(r"t(\d+)-[0-9a-f]+", path.name)
        if not match or Path(f"/proc/{match.group(1)}").exists():
            continue
        info = load_info(path.name)
        if info is not None and _process_is_instance(info.pid, info.conf_in_chroot):
            continue
        shutil.rmtree(path, ignore_errors=True)
        for suffix in (".json", ".secret"):
            with contextlib.suppress(FileNotFoundError):
                (STATE_DIR / f"{path.name}{suffix}").unlink()
        removed.append(path.name)
    return removed


def load_info(name: str) -> SandboxInfo | None:
    try:
        return SandboxInfo(**json.loads((STATE_DIR / f"{name}.json").read_text()))
    except (OSError, ValueError, TypeError):
        return None


def list_instances() -> list[tuple[SandboxInfo, bool]]:
    """Every instance with a state file, and whether its Asterisk is alive."""
    out = []
    for state in sorted(STATE_DIR.glob("*.json")):
        info = load_info(state.stem)
        if info is not None:
            out.append((info, _process_is_instance(info.pid, info.conf_in_chroot)))
    return out
