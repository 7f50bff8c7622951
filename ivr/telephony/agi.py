"""FastAGI: a pure codec over bytes plus a thin asyncio server.

Asterisk's dialplan `AGI(agi://host:4573/<flow>?lang=en)` opens a TCP connection, sends the
`agi_*` environment block (``key: value`` lines ended by a blank line), then waits for commands
(``SET VARIABLE IVR_ROUTE "queue"\\n``) and answers each with one response line
(``200 result=1 (data) endpos=123``), or a multi-line ``520-`` usage block. When the caller hangs
up during a command Asterisk may also write a bare ``HANGUP`` line.

The codec part (`parse_environment`, `format_command`, `AgiResponseParser`) never touches a
socket; `AgiSession` and `AgiServer` are the asyncio glue.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from ivr.errors import IvrError, ProtocolError
from ivr.telephony.peers import PeerAllowList
from ivr.telephony.streams import WriteStalled, close_writer, drain

log = logging.getLogger(__name__)

# Asterisk reads AGI commands into a 2048-byte buffer (res_agi.c AGI_BUF_LEN): longer lines are cut.
MAX_COMMAND_BYTES = 2047
MAX_ENV_BYTES = 64 * 1024
MAX_RESPONSE_LINE_BYTES = 64 * 1024
# Asterisk answers a command at once, except EXEC, which lasts as long as the application
# (AudioSocket: the whole conversation) and so has no default limit
DEFAULT_COMMAND_TIMEOUT_S = 10.0


# --------------------------------------------------------------------------------------------- errors


class AgiError(IvrError):
    """An AGI command failed; `response` is the parsed reply when there was one."""

    def __init__(self, message: str, response: AgiResponse | None = None, *, fix: str | None = None) -> None:
        self.response = response
        super().__init__(message, fix=fix)


class AgiInvalidCommand(AgiError):
    """510: Asterisk does not know the command."""


class AgiDeadChannel(AgiError):
    """511: the command is not permitted on a dead channel (the caller has hung up)."""


class AgiUsageError(AgiError):
    """520: the command's arguments are wrong; `usage` is Asterisk's usage text."""

    def __init__(self, message: str, response: AgiResponse | None = None, usage: str = "") -> None:
        self.usage = usage
        super().__init__(message, response)


class AgiHangup(AgiError):
    """Asterisk signalled HANGUP (or closed the connection): the caller is gone."""


# ----------------------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class AgiRequest:
    """The environment block Asterisk sends first, with the FastAGI script path split up.

    `flow` is the script path without its query (``support`` for ``agi://h:4573/support?lang=en``),
    `query` its parameters (``{"lang": "en"}``), `args` the extra AGI() arguments (agi_arg_1...).
    """

    env: dict[str, str]
    flow: str
    query: dict[str, str]
    args: list[str]

    def get(self, key: str, default: str = "") -> str:
        """An env value by its name with or without the ``agi_`` prefix."""
        return self.env.get(key if key.startswith("agi_") else f"agi_{key}", default)

    @property
    def channel(self) -> str:
        return self.get("channel")

    @property
    def uniqueid(self) -> str:
        return self.get("uniqueid")

    @property
    def callerid(self) -> str:
        return self.get("callerid")

    @property
    def calleridname(self) -> str:
        return self.get("calleridname")

    @property
    def language(self) -> str:
        return self.get("language")


def _split_script(script: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(script)
    flow = parts.path.strip("/")
    return flow, dict(parse_qsl(parts.query, keep_blank_values=True))


def parse_environment(block: bytes) -> AgiRequest:
    """Parse the `agi_*` environment block (with or without its terminating blank line).

    Raises ProtocolError naming the first bad line.
    """
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError:
        text = block.decode("latin-1")
    env: dict[str, str] = {}
    for number, line in enumerate(text.split("\n"), 1):
        line = line.rstrip("\r")
        if not line:
            continue
        key, sep, value = line.partition(":")
        if not sep or not key.startswith("agi_") or " " in key:
            raise ProtocolError(
                f"AGI environment line {number} is not 'agi_<name>: <value>': {line[:80]!r}",
                fix="point AGI() at this server only from Asterisk's dialplan (agi://host:port/flow)",
            )
        env[key] = value.removeprefix(" ")
    if "agi_request" not in env and "agi_network_script" not in env:
        raise ProtocolError(
            "AGI environment has neither agi_request nor agi_network_script",
            fix="call this server with AGI(agi://host:port/<flow>) from the dialplan",
        )
    script = env.get("agi_network_script", "")
    if not script:
        request = env.get("agi_request", "")
        script = urlsplit(request).path + (f"?{urlsplit(request).query}" if urlsplit(request).query else "")
    flow, query = _split_script(script)
    args = []
    index = 1
    while f"agi_arg_{index}" in env:
        args.append(env[f"agi_arg_{index}"])
        index += 1
    return AgiRequest(env=env, flow=flow, query=query, args=args)


def format_environment(env: Mapping[str, str]) -> bytes:
    """Serialize an environment block as Asterisk writes it (for test peers and benches)."""
    return "".join(f"{key}: {value}\n" for key, value in env.items()).encode("utf-8") + b"\n"


# ----------------------------------------------------------------------------------------- commands


def quote_arg(value: str) -> str:
    """Quote one AGI argument the way res_agi's parser reads it back.

    res_agi splits on spaces, honours double quotes, and takes the character after a backslash
    literally; so we escape backslash and quote, then wrap in quotes. A line break would end the
    command early, so it is refused (callers flatten text first, see `flatten`).
    """
    if "\n" in value or "\r" in value or "\x00" in value:
        raise ProtocolError(
            f"AGI argument contains a line break or NUL: {value[:60]!r}",
            fix="flatten the text first (ivr.telephony.agi.flatten)",
        )
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def flatten(text: str) -> str:
    """Collapse line breaks and other control characters into single spaces."""
    return re.sub(r"[\x00-\x1f\x7f]+", " ", text).strip()


def escaped_size(text: str) -> int:
    """Bytes `text` takes inside the quotes of `quote_arg` (backslash and quote are doubled)."""
    return len(text.encode("utf-8")) + text.count("\\") + text.count('"')


def truncate_escaped(text: str, max_bytes: int) -> str:
    """The longest prefix of `text` whose escaped form (`quote_arg` without its quotes) fits
    `max_bytes`: the limit applies to what goes on the wire, so a value of quotes or backslashes
    (each doubled by escaping) cannot push the command line past Asterisk's buffer. Never splits
    a character or an escape pair."""
    if escaped_size(text) <= max_bytes:
        return text
    used = 0
    for index, char in enumerate(text):
        size = len(char.encode("utf-8")) + (1 if char in '\\"' else 0)
        if used + size > max_bytes:
            return text[:index]
        used += size
    return text


# Asterisk takes any name for SET VARIABLE, but one the dialplan can read back as ${NAME} is
# letters, digits and _ (plus the parentheses of a function such as TIMEOUT(absolute))
VARIABLE_NAME_RE = re.compile(r"[A-Za-z0-9_()]+")


def safe_variable_name(key: str) -> str:
    """A channel variable name made from any key (a hook result's, a slot's): upper case, every run
    of other characters becomes one `_` (``account-id`` -> ``ACCOUNT_ID``); "" if nothing is left."""
    return re.sub(r"[^A-Z0-9]+", "_", key.upper()).strip("_")


def truncate_utf8(text: str, max_bytes: int) -> str:
    """Cut `text` to at most `max_bytes` of UTF-8 without splitting a character."""
    raw = text.encode("utf-8")
    if len(raw) <= max_bytes:
        return text
    return raw[:max_bytes].decode("utf-8", errors="ignore")


def format_command(verb: str, *args: str | int) -> bytes:
    """Serialize one AGI command line: the verb as is, each argument quoted, a final newline.

    Raises ProtocolError if the line would exceed Asterisk's 2047-byte command buffer.
    """
    parts = [verb] + [quote_arg(str(arg)) for arg in args]
    line = (" ".join(parts) + "\n").encode("utf-8")
    if len(line) > MAX_COMMAND_BYTES:
        raise ProtocolError(
            f"AGI command {verb!r} is {len(line)} bytes; Asterisk reads at most {MAX_COMMAND_BYTES}",
            fix="shorten the value (ivr.telephony.agi.truncate_utf8)",
        )
    return line


# ---------------------------------------------------------------------------------------- responses


@dataclass(frozen=True)
class AgiResponse:
    """One reply: ``code`` (200, 510, 511, 520), ``result`` (the text after ``result=``),
    ``data`` (the text in parentheses, if any), ``endpos`` and, for 520, the usage text."""

    code: int
    result: str = ""
    data: str | None = None
    endpos: int | None = None
    usage: str = ""
    raw: str = ""

    @property
    def value(self) -> int:
        """`result` as an integer (most commands return a number; -1 usually means failure)."""
        try:
            return int(self.result)
        except ValueError:
            return 0


@dataclass(frozen=True)
class AgiHangupSignal:
    """A bare HANGUP line: the channel hung up while we were talking to it."""


_RESULT_RE = re.compile(r"^200 result=(?P<result>\S*)(?: \((?P<data>.*)\))?(?: endpos=(?P<endpos>-?\d+))?\s*$")


def format_response(response: AgiResponse) -> bytes:
    """Serialize a reply as Asterisk writes it (the inverse of `AgiResponseParser`)."""
    if response.code == 520 and response.usage:
        head = "520-Invalid command syntax.  Proper usage follows:"
        return f"{head}\n{response.usage}\n520 {response.data or ''}\n".encode()
    if response.code != 200:
        return f"{response.code} {response.data or ''}".rstrip().encode() + b"\n"
    line = f"200 result={response.result}"
    if response.data is not None:
        line += f" ({response.data})"
    if response.endpos is not None:
        line += f" endpos={response.endpos}"
    return line.encode("utf-8") + b"\n"


def parse_response_line(line: str) -> AgiResponse:
    """Parse one single-line reply (not the 520- usage block)."""
    line = line.rstrip("\r\n")
    if line.startswith("200 "):
        match = _RESULT_RE.match(line)
        if not match:
            raise ProtocolError(f"AGI reply not understood: {line[:120]!r}")
        endpos = match["endpos"]
        return AgiResponse(200, match["result"], match["data"], int(endpos) if endpos else None, raw=line)
    head = line[:3]
    if len(head) == 3 and head.isdigit() and (len(line) == 3 or line[3] == " "):
        return AgiResponse(int(head), data=line[4:] or None, raw=line)
    raise ProtocolError(f"AGI reply not understood: {line[:120]!r}")


class AgiResponseParser:
    """Incremental parser for what Asterisk writes after the environment block.

    `feed(bytes)` returns the complete items seen so far: `AgiResponse` or `AgiHangupSignal`.
    Handles replies split across reads and the multi-line ``520-`` usage block.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._usage: list[str] | None = None

    def feed(self, data: bytes) -> list[AgiResponse | AgiHangupSignal]:
        self._buffer += data
        items: list[AgiResponse | AgiHangupSignal] = []
        while b"\n" in self._buffer:
            raw, self._buffer = self._buffer.split(b"\n", 1)
            line = raw.decode("utf-8", errors="replace").rstrip("\r")
            item = self._line(line)
            if item is not None:
                items.append(item)
        if len(self._buffer) > MAX_RESPONSE_LINE_BYTES:
            raise ProtocolError(f"AGI reply line longer than {MAX_RESPONSE_LINE_BYTES} bytes")
        return items

    def _line(self, line: str) -> AgiResponse | AgiHangupSignal | None:
        if self._usage is not None:
            if line.startswith("520 "):
                usage = "\n".join(self._usage)
                self._usage = None
                return AgiResponse(520, data=line[4:], usage=usage, raw=line)
            self._usage.append(line)
            return None
        if line == "HANGUP":
            return AgiHangupSignal()
        if not line:
            return None  # Asterisk sometimes ends a block with an empty line
        if line.startswith("520-"):
            self._usage = []
            return None
        return parse_response_line(line)


def check_response(command: str, response: AgiResponse) -> AgiResponse:
    """Return `response` if it is a 200 reply, else raise the matching AgiError subclass."""
    if response.code == 200:
        return response
    if response.code == 510:
        raise AgiInvalidCommand(f"AGI command {command!r}: invalid or unknown command", response)
    if response.code == 511:
        raise AgiDeadChannel(f"AGI command {command!r}: not permitted on a dead channel", response)
    if response.code == 520:
        raise AgiUsageError(f"AGI command {command!r}: invalid syntax", response, response.usage)
    raise AgiError(f"AGI command {command!r}: unexpected reply {response.raw!r}", response)


# ------------------------------------------------------------------------------------ asyncio session


class AgiSession:
    """One FastAGI conversation: run commands on the channel, typed results, errors as exceptions.

    Commands run one at a time (a lock) because AGI is strictly request/response.
    """

    def __init__(
        self,
        request: AgiRequest,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.request = request
        self._reader = reader
        self._writer = writer
        self._parser = AgiResponseParser()
        self._pending: list[AgiResponse | AgiHangupSignal] = []
        self._lock = asyncio.Lock()
        self.hung_up = False

    @property
    def peer(self) -> str:
        peer = self._writer.get_extra_info("peername")
        return f"{peer[0]}:{peer[1]}" if peer else "?"

    async def _next_item(self) -> AgiResponse | AgiHangupSignal:
        while not self._pending:
            data = await self._reader.read(4096)
            if not data:
                self.hung_up = True
                raise AgiHangup("Asterisk closed the AGI connection")
            self._pending.extend(self._parser.feed(data))
        return self._pending.pop(0)

    async def command(
        self, verb: str, *args: str | int, timeout: float | None = DEFAULT_COMMAND_TIMEOUT_S
    ) -> AgiResponse:
        """Send one command and wait for its reply (up to `timeout` s; None: no limit).

        Raises AgiError subclasses on failure. A HANGUP signal seen before the reply is remembered
        (`hung_up`); the reply is still read so the stream stays in step, then AgiHangup is raised
        if the reply is not a success. After a timeout the stream is out of step: the session is
        marked `hung_up` and should only be closed.
        """
        line = format_command(verb, *args)
        async with self._lock:
            if self._writer.is_closing():
                raise AgiHangup(f"AGI command {verb!r}: connection already closed")
            self._writer.write(line)
            try:
                await drain(self._writer)  # bounded: a peer that stops reading must not hold the call
            except WriteStalled as exc:
                self.hung_up = True
                raise AgiError(f"AGI command {verb!r}: {exc}",
                               fix="check Asterisk's load and the network to it") from None
            except (ConnectionError, OSError) as exc:
                self.hung_up = True
                raise AgiHangup(f"AGI command {verb!r}: connection lost: {exc}") from None
            while True:
                try:
                    item = await asyncio.wait_for(self._next_item(), timeout)
                except TimeoutError:
                    self.hung_up = True
                    raise AgiError(f"AGI command {verb!r}: no reply from Asterisk within {timeout:.0f} s",
                                   fix="check Asterisk's load and the network to it") from None
                if isinstance(item, AgiHangupSignal):
                    self.hung_up = True
                    continue
                break
        if self.hung_up and item.code != 200:
            raise AgiHangup(f"AGI command {verb!r}: the caller hung up", item)
        return check_response(verb, item)

    async def answer(self) -> None:
        """Answer the channel (no-op if already answered)."""
        response = await self.command("ANSWER")
        if response.value < 0:
            raise AgiHangup("ANSWER failed: the channel is gone", response)

    async def set_variable(self, name: str, value: str) -> None:
        """Set a channel variable; `value` may hold spaces, quotes and UTF-8 (line breaks are flattened)."""
        if not VARIABLE_NAME_RE.fullmatch(name):
            raise ProtocolError(f"bad channel variable name {name!r}", fix="use letters, digits and _")
        # the value is cut after escaping, to what the line has room for: never a ProtocolError
        room = MAX_COMMAND_BYTES - len(format_command("SET VARIABLE", name, ""))
        await self.command("SET VARIABLE", name, truncate_escaped(flatten(value), room))

    async def get_variable(self, name: str) -> str | None:
        """A channel variable's value, or None when it is not set."""
        response = await self.command("GET VARIABLE", name)
        return response.data if response.value == 1 else None

    async def exec(self, app: str, args: str = "", *, timeout: float | None = None) -> int:
        """Run a dialplan application (`EXEC app args`) and return its result (-1: failed/hung up).

        No time limit by default: the application may run for the whole call."""
        response = await self.command("EXEC", app, args, timeout=timeout)
        return response.value

    async def verbose(self, message: str, level: int = 1) -> None:
        """Write a line to Asterisk's console/log."""
        await self.command("VERBOSE", flatten(message), level)

    async def hangup(self) -> None:
        """Hang up the channel."""
        await self.command("HANGUP")

    async def close(self) -> None:
        """End the AGI conversation: the dialplan continues after AGI()."""
        await close_writer(self._writer)


# ------------------------------------------------------------------------------------- asyncio server

AgiHandler = Callable[[AgiSession], Awaitable[Any]]


@dataclass
class AgiServerParams:
    host: str = "127.0.0.1"
    port: int = 4573
    allowed_peers: list[str] = field(default_factory=lambda: ["127.0.0.1", "::1"])
    first_message_timeout_s: float = 5.0


async def read_environment(reader: asyncio.StreamReader) -> AgiRequest:
    """Read bytes up to the blank line that ends the environment block and parse it."""
    block = b""
    while True:
        line = await reader.readline()
        if not line:
            raise ProtocolError("AGI peer closed the connection before sending its environment")
        if line in (b"\n", b"\r\n"):
            break
        block += line
        if len(block) > MAX_ENV_BYTES:
            raise ProtocolError(f"AGI environment block larger than {MAX_ENV_BYTES} bytes")
    return parse_environment(block)


class AgiServer:
    """Accept FastAGI connections from allowed peers and route each by flow name to a handler.

    `routes` maps flow name -> handler; `default` (if given) takes any other flow. A connection
    for a flow with no handler is closed at once, so the dialplan continues (fail-open).
    """

    def __init__(
        self,
        params: AgiServerParams,
        routes: Mapping[str, AgiHandler] | None = None,
        default: AgiHandler | None = None,
    ) -> None:
        self.params = params
        self._peers = PeerAllowList(params.allowed_peers)
        self.routes = dict(routes or {})
        self.default = default
        self._server: asyncio.base_events.Server | None = None
        self.active: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._on_connect, self.params.host, self.params.port)

    @property
    def port(self) -> int:
        assert self._server is not None, "AgiServer.start() first"
        return self._server.sockets[0].getsockname()[1]

    async def stop_accepting(self) -> None:
        if self._server is not None:
            # close() stops accepting; not wait_closed(): from Python 3.12 it also waits for every
            # call in progress to end, which is the drain's job (with its own time limit)
            self._server.close()

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.active.add(task)
        try:
            await self._serve(reader, writer)
        finally:
            self.active.discard(task)
            if not writer.is_closing():
                writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        host = peer[0] if peer else ""
        if not self._peers.allows(host):
            log.warning("AGI: refused connection from %s (not in server.allowed_peers)", host)
            return
        try:
            request = await asyncio.wait_for(read_environment(reader), self.params.first_message_timeout_s)
        except TimeoutError:
            log.warning("AGI: %s sent no environment within %.1f s", host, self.params.first_message_timeout_s)
            return
        except (ProtocolError, ValueError, ConnectionError) as exc:  # ValueError: a line over 64 KiB
            log.warning("AGI: %s: bad environment block: %s", host, exc)
            return
        handler = self.routes.get(request.flow, self.default)
        if handler is None:
            log.warning("AGI: no handler for flow %r (channel %s)", request.flow, request.channel)
            return
        session = AgiSession(request, reader, writer)
        try:
            await handler(session)
        except AgiHangup:
            log.info("AGI: %s hung up", request.channel)
        except Exception:
            log.exception("AGI: handler for flow %r failed on %s", request.flow, request.channel)
        finally:
            await session.close()
