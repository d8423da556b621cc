#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets: valid UDP multicast frames.

The first frame is a real capture (a Linux UDP socket sending to 239.1.2.3:5004 over a veth
pair, read with AF_PACKET; the same bytes as relay-rules' parser tests); the others vary it the
ways the parser must accept: VLAN tags, IPv4 options, Ethernet padding, no UDP checksum, empty
and 1316-byte payloads. Seeds of `rewrite` put a 40-byte control block (template fields, see
fuzz_targets/rewrite.rs) in front of each frame. Run from this directory: python3 make_seeds.py
"""
import os
import struct

CAPTURED = bytes.fromhex(
    "01005e010203020000000a01080045b80033d5b740000411ed44c0000201ef010203"
    "9c40138c001f375866616e6f75742d72656c61792074657374206672616d65"
)


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def frame(payload, tags=(), options=b"", udp_checksum=True, padding=0, dst=(239, 1, 2, 3)):
    src = bytes((192, 0, 2, 1))
    dst = bytes(dst)
    udp_len = 8 + len(payload)
    udp = struct.pack("!HHHH", 40000, 5004, udp_len, 0) + payload
    if udp_checksum:
        c = csum(src + dst + struct.pack("!BBH", 0, 17, udp_len) + udp) or 0xFFFF
        udp = udp[:6] + struct.pack("!H", c) + udp[8:]
    ihl = 5 + len(options) // 4
    ip = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0xB8, ihl * 4 + udp_len, 0xD5B7, 0x4000, 4, 17, 0, src, dst)
    ip += options
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    mac = bytes((0x01, 0x00, 0x5E, dst[1] & 0x7F, dst[2], dst[3])) + bytes.fromhex("020000000a01")
    eth = mac + b"".join(struct.pack("!HH", tpid, tci) for tpid, tci in tags) + b"\x08\x00"
    return eth + ip + udp + b"\0" * padding


TEXT = b"fanout-relay test frame"
FRAMES = {
    "captured": CAPTURED,
    "vlan": frame(TEXT, tags=[(0x8100, 0x2064)]),
    "qinq": frame(TEXT, tags=[(0x88A8, 7), (0x8100, 200)]),
    "options": frame(TEXT, options=bytes((1, 1, 1, 0, 0x94, 4, 0, 0))),
    "padded": frame(b"hi", padding=16),
    "empty": frame(b""),
    "nocsum-64": frame(bytes(range(64)), udp_checksum=False),
    "ts-1316": frame(bytes((0x47 if i % 188 == 0 else i & 0xFF) for i in range(1316)), dst=(239, 200, 10, 20)),
}


def control(vlan=None, source_port=None, dscp=None, mtu=1500, out_len=2048, offloaded=None):
    flags = (vlan is not None) | (source_port is not None) << 1 | (dscp is not None) << 2
    flags |= (offloaded is not None) << 3
    block = bytes.fromhex("020000000c01") + bytes.fromhex("01005e480a14")
    block += struct.pack("!H", vlan or 0) + bytes((10, 1, 0, 1)) + bytes((239, 200, 10, 20))
    block += struct.pack("!HHBBHB", source_port or 0, 6000, 16, dscp or 0, mtu, flags)
    block += struct.pack("!HH", 0x0102, out_len) + struct.pack("!HH", *(offloaded or (0, 0))) + b"\0"
    assert len(block) == 40
    return block


CONTROLS = [
    control(),
    control(vlan=300, dscp=34),
    control(source_port=7000, offloaded=(0x8100, 10)),
    control(mtu=576, out_len=1514),
]

for target in ("parse", "rewrite"):
    os.makedirs(os.path.join("corpus", target), exist_ok=True)
for i, (name, data) in enumerate(FRAMES.items()):
    with open(os.path.join("corpus", "parse", "seed-" + name), "wb") as f:
        f.write(data)
    with open(os.path.join("corpus", "rewrite", "seed-" + name), "wb") as f:
        f.write(CONTROLS[i % len(CONTROLS)] + data)
