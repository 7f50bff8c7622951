"""Real SIP callers for the sandbox Asterisk: SIPp places the calls, we script what they say.

SIPp (Debian `sip-tester`) is the SIP user agent: INVITE with an SDP offer of one G.711 law and
RFC 4733 telephone-events, ACK, then it plays a pcap of the caller's RTP and hangs up after
`listen_s` (or answers Asterisk's BYE when the assistant ends the call first).

What the caller says is a pcap we write (`caller_pcap`): 20 ms G.711 packets of a fixture's speech
and silence, and DTMF as RFC 4733 events (payload 101, the marker on the first packet, the end
packet three times) in the same RTP stream, as a desk phone sends them. SIPp's own `play_dtmf`
sends its events from port 0 with payload 96/97, which Asterisk drops, hence our own packets.

What the caller hears is read off the loopback interface (`LoopbackCapture`, an AF_PACKET socket,
root only): the RTP that Asterisk sends to each call's media port, decoded back to slin, and the RTP
the caller sent, each packet with the kernel's receive time (so timings do not depend on when the
capture thread gets to run). The SIP messages seen there tie each call's media port to its Call-ID,
the caller's display name and Asterisk's hang-up cause.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import re
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ivr.audio import g711
from ivr.audio.g711 import Law
from ivr.audio.pcm import FRAME_BYTES, frames, silence
from ivr.errors import IvrError
from ivr.telephony.rtp import (
    DTMF_EVENTS,
    PT_PCMA,
    PT_PCMU,
    PT_TELEPHONE_EVENT,
    RtpError,
    RtpPacket,
    TelephoneEvent,
)

SIPP = "sipp"
PAYLOAD_TYPES: dict[Law, int] = {"ulaw": PT_PCMU, "alaw": PT_PCMA}
RTPMAP: dict[Law, str] = {"ulaw": "PCMU/8000", "alaw": "PCMA/8000"}
FRAME_SAMPLES = FRAME_BYTES // 2
DTMF_TONE_MS = 120  # a key held as long as a person presses it
DTMF_GAP_MS = 300  # between two keys of the same press
EVENT_END_REPEATS = 3  # RFC 4733 2.5.1.4: the end packet is sent three times
SIP_LOCAL_PORT_BASE = 0  # 0: a free port each run (several runs at once)
# Linux asm-generic/socket.h (x86-64, arm64): receive times as struct timespec; Python has no name for it
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)


class SipCallerError(IvrError):
    """SIPp is missing, or the calls could not be placed."""


# ---------------------------------------------------------------------------- what the caller says


@dataclass(frozen=True)
class Speak:
    pcm: bytes  # 8 kHz slin


@dataclass(frozen=True)
class Pause:
    ms: int


@dataclass(frozen=True)
class Press:
    keys: str
    tone_ms: int = DTMF_TONE_MS


Segment = Speak | Pause | Press


def caller_packets(script: Sequence[Segment], law: Law, *, ssrc: int = 0x1F00D) -> list[bytes]:
    """The caller's RTP stream, one packet per 20 ms: speech and pauses as G.711, keys as
    RFC 4733 events (no audio while a key is held, as a phone does)."""
    packets: list[bytes] = []
    seq, ts = 1, 0
    silent = g711.encode(silence(20), law)

    def audio(payload: bytes) -> None:
        nonlocal seq, ts
        packets.append(bytes(RtpPacket(PAYLOAD_TYPES[law], seq, ts, ssrc, payload, marker=seq == 1)))
        seq, ts = seq + 1, ts + FRAME_SAMPLES

    for segment in script:
        if isinstance(segment, Speak):
            for frame in frames(segment.pcm):
                audio(g711.encode(frame, law))
        elif isinstance(segment, Pause):
            for _ in range(segment.ms // 20):
                audio(silent)
        else:
            for i, key in enumerate(segment.keys):
                if key not in DTMF_EVENTS:
                    raise SipCallerError(f"{key!r} is not a DTMF key", fix="use 0-9, *, #, A-D")
                if i:
                    for _ in range(DTMF_GAP_MS // 20):
                        audio(silent)
                steps = max(1, segment.tone_ms // 20)
                for step in range(1, steps + EVENT_END_REPEATS):
                    end = step >= steps
                    event = TelephoneEvent(DTMF_EVENTS[key], end=end, volume=10,
                                           duration=min(step, steps) * FRAME_SAMPLES)
                    # one timestamp for the whole event (its start); the marker on its first packet
                    packets.append(bytes(RtpPacket(PT_TELEPHONE_EVENT, seq, ts, ssrc, bytes(event),
                                                   marker=step == 1)))
                    seq += 1
                ts += steps * FRAME_SAMPLES
    return packets


def write_pcap(path: Path, packets: Sequence[bytes], *, src_port: int = 6000, dst_port: int = 6000,
               interval_s: float = 0.020) -> None:
    """A libpcap file of UDP datagrams over Ethernet/IPv4 (what SIPp's play_pcap_audio reads).

    SIPp rewrites the addresses and ports to the call's; the packets' times give the pacing.
    RFC 4733 packets of one event share a time slot with nothing else, so each packet gets the
    next 20 ms slot except the repeated end packets, sent back to back as phones do.
    """
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))  # LINKTYPE_ETHERNET
    now = 0.0
    previous_end = False
    for payload in packets:
        packet = RtpPacket.parse(payload)
        is_repeat_end = (packet.payload_type == PT_TELEPHONE_EVENT and previous_end)
        if not is_repeat_end:
            now += interval_s
        previous_end = packet.payload_type == PT_TELEPHONE_EVENT and TelephoneEvent.parse(packet.payload).end
        udp = struct.pack("!HHHH", src_port, dst_port, 8 + len(payload), 0) + payload
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, socket.IPPROTO_UDP, 0,
                         socket.inet_aton("127.0.0.1"), socket.inet_aton("127.0.0.1"))
        frame = b"\x00" * 12 + b"\x08\x00" + ip + udp
        seconds = int(now)
        out += struct.pack("<IIII", seconds, int(round((now - seconds) * 1e6)), len(frame), len(frame)) + frame
    path.write_bytes(bytes(out))


# ---------------------------------------------------------------------------------- the scenario


def scenario_xml(law: Law, pcap: Path, *, listen_s: float, caller: str = "+15550100", caller_name: str = "") -> str:
    """A SIPp UAC: call, play `pcap` as the caller's RTP, then either answer the BYE of an
    assistant that ends the call within `listen_s` or hang up itself after it. `caller_name`, if
    given, is the From display name (Asterisk's CALLERID(name)): a tag to find the call again."""
    if caller_name and not re.fullmatch(r"[A-Za-z0-9_.-]+", caller_name):
        raise SipCallerError(f"bad caller name {caller_name!r}", fix="use letters, digits, ., - and _")
    pt = PAYLOAD_TYPES[law]
    display = f'"{caller_name}" ' if caller_name else ""
    headers = (
        "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n"
        f"      From: {display}<sip:{caller}@[local_ip]:[local_port]>;tag=[pid]T[call_number]\n"
        "      To: <sip:[service]@[remote_ip]:[remote_port]>{peer}\n"
        "      Call-ID: [call_id]\n"
        f"      Contact: <sip:{caller}@[local_ip]:[local_port]>\n"
        "      Max-Forwards: 70"
    )
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="ivr caller ({law})">
  <send retrans="500">
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      {headers.format(peer="")}
      CSeq: 1 INVITE
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=caller 1 1 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [auto_media_port] RTP/AVP {pt} {PT_TELEPHONE_EVENT}
      a=rtpmap:{pt} {RTPMAP[law]}
      a=rtpmap:{PT_TELEPHONE_EVENT} telephone-event/8000
      a=fmtp:{PT_TELEPHONE_EVENT} 0-16
      a=ptime:20
      a=sendrecv
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rtd="true"/>
  <send>
    <![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      {headers.format(peer="[peer_tag_param]")}
      CSeq: 1 ACK
      Content-Length: 0
    ]]>
  </send>
  <nop><action><exec play_pcap_audio="{pcap}"/></action></nop>
  <recv request="BYE" timeout="{int(listen_s * 1000)}" ontimeout="caller_hangs_up"/>
  <send next="done">
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
    ]]>
  </send>
  <label id="caller_hangs_up"/>
  <send retrans="500">
    <![CDATA[
      BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      {headers.format(peer="[peer_tag_param]")}
      CSeq: 2 BYE
      Content-Length: 0
    ]]>
  </send>
  <recv response="200" crlf="true"/>
  <label id="done"/>
</scenario>
"""


# --------------------------------------------------------------------------- what the caller hears


@dataclass
class HeardCall:
    """One SIP call as seen on the wire."""

    call_id: str
    media_port: int = 0  # the caller's RTP port (SIPp), from its INVITE
    rtp: list[RtpPacket] = field(default_factory=list)  # what Asterisk sent to the caller
    rtp_at: list[float] = field(default_factory=list)  # ...and when each packet was on the wire (epoch s)
    sent: list[tuple[float, RtpPacket]] = field(default_factory=list)  # what the caller sent, with times
    caller_name: str = ""  # the display name of the INVITE's From
    bye_from_asterisk: bool = False
    reason: str = ""  # the Reason header of Asterisk's BYE (res_pjsip_rfc3326), if any
    answered: bool = False

    def audio(self) -> bytes:
        """What the caller heard, as 8 kHz slin: the packets in sequence order, a lost packet as
        20 ms of silence. (Timestamps are not used: Asterisk's jump by a few frames when the audio
        source changes, which a phone's jitter buffer absorbs; laying them out would cut prompts.)"""
        media = sorted((p for p in self.rtp if p.payload_type in (PT_PCMU, PT_PCMA)), key=lambda p: p.sequence)
        out = bytearray()
        previous = None
        for packet in media:
            if previous is not None:
                lost = ((packet.sequence - previous) & 0xFFFF) - 1
                out += bytes(FRAME_BYTES * min(lost, 50))
            previous = packet.sequence
            law: Law = "ulaw" if packet.payload_type == PT_PCMU else "alaw"
            out += g711.decode(packet.payload, law)
        return bytes(out)

    @property
    def payload_types(self) -> set[int]:
        return {p.payload_type for p in self.rtp}


def _sip_header(message: str, name: str) -> str:
    for line in message.split("\r\n"):
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return ""


def _display_name(from_header: str) -> str:
    match = re.match(r'\s*"([^"]*)"', from_header)
    return match.group(1) if match else ""


class LoopbackCapture:
    """Everything on the loopback interface to or from the SIP port, and the RTP to and from the
    callers' media ports, sorted into calls. Needs root (AF_PACKET). Each packet is stamped with the
    kernel's receive time (SO_TIMESTAMPNS, epoch seconds), not the time this thread read it."""

    def __init__(self, sip_port: int) -> None:
        self.sip_port = sip_port
        self.calls: dict[str, HeardCall] = {}
        self._by_port: dict[int, HeardCall] = {}
        self.cpu_s = 0.0  # CPU time of the capture thread (to subtract it from a process total)
        self.unmatched: collections.Counter[tuple[int, int]] = collections.Counter()  # RTP of no call: (src, dst)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))
        self._sock.bind(("lo", 0))
        self._sock.settimeout(0.2)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
        self._sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self._thread = threading.Thread(target=self._run, name="loopback-capture", daemon=True)

    def __enter__(self) -> LoopbackCapture:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.3)  # the last packets in flight
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def _run(self) -> None:
        started = time.thread_time()
        try:
            self._read()
        finally:
            self.cpu_s = time.thread_time() - started

    def _read(self) -> None:
        space = socket.CMSG_SPACE(16)
        while not self._stop.is_set():
            try:
                data, ancillary, _, address = self._sock.recvmsg(65535, space)
            except TimeoutError:
                continue
            except OSError:
                return
            if address[2] == socket.PACKET_OUTGOING:  # loopback shows each packet twice
                continue
            at = time.time()
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
                    seconds, nanos = struct.unpack("qq", value[:16])
                    at = seconds + nanos / 1e9
            self._packet(data, at)

    def _packet(self, data: bytes, at: float = 0.0) -> None:
        if len(data) < 42 or data[12:14] != b"\x08\x00" or data[23] != socket.IPPROTO_UDP:
            return
        ihl = (data[14] & 0x0F) * 4
        src, dst = struct.unpack_from("!HH", data, 14 + ihl)
        payload = data[14 + ihl + 8:]
        if self.sip_port in (src, dst):
            self._sip(payload.decode("utf-8", "replace"), to_asterisk=dst == self.sip_port)
            return
        with self._lock:
            call = self._by_port.get(dst)
            caller = self._by_port.get(src) if call is None else None
        try:
            packet = RtpPacket.parse(payload)
        except RtpError:
            return
        if call is not None:
            call.rtp.append(packet)
            call.rtp_at.append(at)
        elif caller is not None:
            caller.sent.append((at, packet))
        else:
            self.unmatched[(src, dst)] += 1

    def _sip(self, message: str, *, to_asterisk: bool) -> None:
        call_id = _sip_header(message, "Call-ID") or _sip_header(message, "i")
        if not call_id:
            return
        with self._lock:
            call = self.calls.setdefault(call_id, HeardCall(call_id))
            first_line = message.split("\r\n", 1)[0]
            if to_asterisk and first_line.startswith("INVITE ") and "m=audio " in message:
                call.media_port = int(message.split("m=audio ", 1)[1].split()[0])
                call.caller_name = _display_name(_sip_header(message, "From") or _sip_header(message, "f"))
                self._by_port[call.media_port] = call
            elif not to_asterisk and first_line.startswith("SIP/2.0 200") and "INVITE" in _sip_header(message, "CSeq"):
                call.answered = True
            elif not to_asterisk and first_line.startswith("BYE "):
                call.bye_from_asterisk = True
                call.reason = _sip_header(message, "Reason")


# ---------------------------------------------------------------------------------------- running


@dataclass
class SippRun:
    returncode: int
    calls: list[HeardCall]
    stats: str  # SIPp's own error log / screen, for failure messages
    elapsed_s: float


def sipp_available() -> str | None:
    """None if SIPp can be used here, else why not."""
    if shutil.which(SIPP) is None:
        return "SIPp is not installed (apt-get install sip-tester)"
    if not hasattr(socket, "AF_PACKET"):
        return "no AF_PACKET sockets (Linux only) to hear the calls"
    import os

    if os.geteuid() != 0:
        return "SIPp's pcap play and the loopback capture need root"
    return None


def place_calls(
    sip_port: int,
    script: Sequence[Segment],
    workdir: Path,
    *,
    law: Law = "ulaw",
    calls: int = 1,
    concurrent: int | None = None,
    rate_per_s: float = 10.0,
    listen_s: float = 10.0,
    dialled: str = "100",
    caller: str = "+15550100",
    timeout_s: float = 120.0,
) -> SippRun:
    """Place `calls` SIP calls (at most `concurrent` at once) to the sandbox's SIP port; each says
    `script`, listens up to `listen_s` after the call is answered, then hangs up."""
    reason = sipp_available()
    if reason:
        raise SipCallerError(reason, fix="run ./install.sh as root")
    workdir.mkdir(parents=True, exist_ok=True)
    pcap = workdir / f"caller-{law}.pcap"
    write_pcap(pcap, caller_packets(script, law))
    scenario = workdir / f"caller-{law}.xml"
    scenario.write_text(scenario_xml(law, pcap, listen_s=listen_s, caller=caller))
    errors = workdir / "sipp-errors.log"
    command = sipp_command(sip_port, scenario, errors, dialled=dialled, calls=calls, concurrent=concurrent,
                           rate_per_s=rate_per_s, timeout_s=timeout_s)
    started = time.monotonic()
    with LoopbackCapture(sip_port) as capture:
        result = subprocess.run(command, capture_output=True, text=True, cwd=workdir, timeout=timeout_s + 30)
    elapsed = time.monotonic() - started
    log = errors.read_text(errors="replace")[-2000:] if errors.exists() else ""
    heard = [dataclasses.replace(c) for c in capture.calls.values() if c.media_port]
    return SippRun(result.returncode, heard, f"{result.stdout[-1500:]}{result.stderr[-1500:]}{log}", elapsed)


def sipp_command(sip_port: int, scenario: Path, errors: Path, *, dialled: str = "100", calls: int = 1,
                 concurrent: int | None = None, rate_per_s: float = 10.0, timeout_s: float = 120.0) -> list[str]:
    """The SIPp command line for `scenario` against the sandbox's SIP port, on loopback, with its
    own free SIP and media ports (several SIPp processes may run at once)."""
    return [
        SIPP, f"127.0.0.1:{sip_port}", "-sf", str(scenario), "-s", dialled,
        "-i", "127.0.0.1", "-mi", "127.0.0.1", "-p", str(_free_udp_port()), "-mp", str(_free_udp_port()),
        "-m", str(calls), "-l", str(concurrent or calls), "-r", str(rate_per_s),
        "-nostdin", "-trace_err", "-error_file", str(errors),
        "-timeout", f"{int(timeout_s)}s", "-timeout_error",
    ]


def _free_udp_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def speech_spans(pcm: bytes, *, threshold: float = 300.0, min_gap_ms: int = 400) -> list[tuple[float, float]]:
    """(start_s, end_s) of the stretches of `pcm` louder than `threshold` RMS per 20 ms frame,
    joined across gaps shorter than `min_gap_ms`: where the caller heard the assistant talk."""
    import numpy as np

    spans: list[tuple[float, float]] = []
    for i, frame in enumerate(frames(pcm, pad=False)):
        level = float(np.sqrt(np.mean(np.frombuffer(frame, "<i2").astype(np.float64) ** 2)))
        if level < threshold:
            continue
        start, end = i * 0.02, (i + 1) * 0.02
        if spans and start - spans[-1][1] <= min_gap_ms / 1000:
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((start, end))
    return spans


def similarity(heard: bytes, reference: bytes) -> float:
    """How well `reference` (e.g. a prompt's audio) is found inside `heard`: the peak normalised
    cross-correlation over every alignment, 1.0 for an exact copy, ~0 for unrelated audio.
    G.711 quantisation costs ~0.01; a different sentence scores far lower."""
    import numpy as np

    a = np.frombuffer(heard, "<i2").astype(np.float64)
    b = np.frombuffer(reference, "<i2").astype(np.float64)
    if len(b) == 0 or len(a) < len(b) or not b.any():
        return 0.0
    size = 1 << int(np.ceil(np.log2(len(a) + len(b))))
    corr = np.fft.irfft(np.fft.rfft(a, size) * np.conj(np.fft.rfft(b, size)), size)[: len(a) - len(b) + 1]
    window = np.concatenate(([0.0], np.cumsum(a * a)))
    energy = window[len(b):] - window[: len(a) - len(b) + 1]  # |a[i:i+len(b)]|^2 for each offset
    scores = corr / (np.sqrt(np.maximum(energy, 1e-9)) * np.linalg.norm(b))
    return float(scores.max())


def register_phone(sip_port: int, user: str, password: str, workdir: Path, *, local_ip: str = "127.0.0.2",
                   timeout_s: float = 20.0) -> SippRun:
    """REGISTER as desk phone `user` with digest authentication (pjsip.conf's phone endpoint);
    returncode 0 when Asterisk answered 401 with a challenge and then 200 OK to the credentials.
    `local_ip`: another loopback address than the provider's 127.0.0.1, so the phone is identified
    by its user name, not taken for the trunk (identified by address first)."""
    reason = sipp_available()
    if reason:
        raise SipCallerError(reason, fix="run ./install.sh as root")
    workdir.mkdir(parents=True, exist_ok=True)
    scenario = workdir / "register.xml"
    scenario.write_text(REGISTER_XML.format(user=user))
    errors = workdir / "register-errors.log"
    command = [SIPP, f"127.0.0.1:{sip_port}", "-sf", str(scenario), "-s", user, "-au", user, "-ap", password,
               "-i", local_ip, "-p", str(_free_udp_port()), "-m", "1", "-nostdin", "-trace_err",
               "-error_file", str(errors), "-timeout", f"{int(timeout_s)}s", "-timeout_error"]
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, cwd=workdir, timeout=timeout_s + 30)
    log = errors.read_text(errors="replace")[-2000:] if errors.exists() else ""
    return SippRun(result.returncode, [], f"{result.stdout[-1500:]}{result.stderr[-1500:]}{log}",
                   time.monotonic() - started)


REGISTER_XML = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="desk phone registers">
  <send retrans="500">
    <![CDATA[
      REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:{user}@[remote_ip]>;tag=[pid]R[call_number]
      To: <sip:{user}@[remote_ip]>
      Call-ID: [call_id]
      CSeq: 1 REGISTER
      Contact: <sip:{user}@[local_ip]:[local_port]>
      Expires: 60
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <recv response="401" auth="true"/>
  <send retrans="500">
    <![CDATA[
      REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:{user}@[remote_ip]>;tag=[pid]R[call_number]
      To: <sip:{user}@[remote_ip]>
      Call-ID: [call_id]
      CSeq: 2 REGISTER
      Contact: <sip:{user}@[local_ip]:[local_port]>
      [authentication]
      Expires: 60
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <recv response="200"/>
</scenario>
"""
