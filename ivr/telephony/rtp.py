"""RTP (RFC 3550) packets and RFC 4733 telephone-events: pure parse/serialize over bytes.

Used by the SIP test caller (ivr/testing/sipcaller.py) to build what a phone sends (G.711 audio and DTMF
events) and to read what Asterisk sends back; the live bridge gets its media over AudioSocket.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ivr.errors import IvrError

RTP_VERSION = 2
HEADER = struct.Struct("!BBHII")
PT_PCMU = 0
PT_PCMA = 8
PT_TELEPHONE_EVENT = 101  # dynamic; what Asterisk (and most phones and providers) offer
DTMF_EVENTS = {**{str(d): d for d in range(10)}, "*": 10, "#": 11, "A": 12, "B": 13, "C": 14, "D": 15}
EVENT = struct.Struct("!BBH")


class RtpError(IvrError):
    """Bytes that are not a valid RTP packet or telephone-event."""


@dataclass(frozen=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        if len(data) < HEADER.size:
            raise RtpError(f"RTP packet too short: {len(data)} bytes, the header alone is {HEADER.size}")
        first, second, sequence, timestamp, ssrc = HEADER.unpack_from(data)
        if first >> 6 != RTP_VERSION:
            raise RtpError(f"not RTP: version {first >> 6}, expected {RTP_VERSION}")
        offset = HEADER.size + 4 * (first & 0x0F)  # CSRC list
        if first & 0x10:  # header extension: 4 bytes of profile/length, then length words
            if len(data) < offset + 4:
                raise RtpError("RTP header extension truncated")
            offset += 4 + 4 * struct.unpack_from("!H", data, offset + 2)[0]
        end = len(data)
        if first & 0x20:  # padding: the last byte says how much
            end -= data[-1]
        if offset > end:
            raise RtpError(f"RTP header ({offset} bytes) longer than the packet ({len(data)} bytes)")
        return cls(payload_type=second & 0x7F, sequence=sequence, timestamp=timestamp, ssrc=ssrc,
                   payload=bytes(data[offset:end]), marker=bool(second & 0x80))

    def __bytes__(self) -> bytes:
        return HEADER.pack(RTP_VERSION << 6, (0x80 if self.marker else 0) | self.payload_type,
                           self.sequence & 0xFFFF, self.timestamp & 0xFFFFFFFF, self.ssrc) + self.payload


@dataclass(frozen=True)
class TelephoneEvent:
    """One RFC 4733 event payload: `event` 0-15 for DTMF 0-9 * # A-D."""

    event: int
    end: bool
    volume: int  # dBm0 below 0, 0-63
    duration: int  # in timestamp units (8000 per second)

    @classmethod
    def parse(cls, data: bytes) -> TelephoneEvent:
        if len(data) < EVENT.size:
            raise RtpError(f"telephone-event payload too short: {len(data)} bytes, expected {EVENT.size}")
        event, flags, duration = EVENT.unpack_from(data)
        return cls(event=event, end=bool(flags & 0x80), volume=flags & 0x3F, duration=duration)

    def __bytes__(self) -> bytes:
        return EVENT.pack(self.event, (0x80 if self.end else 0) | (self.volume & 0x3F), self.duration & 0xFFFF)

    @property
    def digit(self) -> str:
        return next((d for d, code in DTMF_EVENTS.items() if code == self.event), "?")
