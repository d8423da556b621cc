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


# Ring walkers. ring_v3: a flag byte (bit 0: a recipe packed into a well-formed block; bit 1:
# rx_hash; bit 2: then patch one header field), then a raw block or a recipe (block size in
# 256-byte units minus one, then per frame a length byte (times 4) and its bytes, then 8 patch
# bytes). ring_v2: two bytes of slot size ((n % 256 + 1) * 16), then the block.
def v3_block(payloads, size=4096):
    block = bytearray(size)
    at = 48
    headers = []
    for payload in payloads:
        mac = 48 + 16
        room = -(-(mac + len(payload)) // 16) * 16
        if headers:
            struct.pack_into("=I", block, headers[-1], at - headers[-1])
        struct.pack_into("=IIIIIIH", block, at, 0, 1, 2, len(payload), len(payload), 1, mac)
        block[at + mac:at + mac + len(payload)] = payload
        headers.append(at)
        at += room
    struct.pack_into("=III", block, 8, 1, len(payloads), 48)
    return bytes(block)


def v3_recipe(payloads, size_units=15, patch=b""):
    out = bytes((size_units,))
    for payload in payloads:
        assert len(payload) % 4 == 0
        out += bytes((len(payload) // 4,)) + payload
    return out + patch


def v2_block(payloads, slot=128):
    block = bytearray(slot * len(payloads))
    for i, payload in enumerate(payloads):
        at = i * slot
        struct.pack_into("=IIIH", block, at, 1, len(payload), len(payload), 32 + 16)
        block[at + 48:at + 48 + len(payload)] = payload
    return bytes(block)


WALKED = [CAPTURED, FRAMES["vlan"], FRAMES["empty"]]
SEEDS = {
    "ring_v3": {
        "block": b"\0" + v3_block(WALKED),
        "block-rxhash": b"\2" + v3_block([FRAMES["ts-1316"], CAPTURED]),
        "recipe": b"\1" + v3_recipe([b"abcd" * 10, b"", b"wxyz" * 3]),
        "recipe-patched": b"\5" + v3_recipe([b"abcd" * 10, b"wxyz"], patch=bytes((3, 1, 0, 0)) + struct.pack("=I", 9000)),
    },
    "ring_v2": {
        "slots": struct.pack("<H", 7) + v2_block(WALKED),
        "slots-2048": struct.pack("<H", 127) + v2_block([FRAMES["ts-1316"]], slot=2048),
    },
    "handoff": {
        "v3": struct.pack("<IBBHIII I", 0x46524731, 3, 0, 0x0300, 1 << 20, 64, 2048, 2),
        "v2-rxhash": struct.pack("<IBBHIII I", 0x46524731, 2, 1, 0x0008, 1 << 16, 16, 2048, 7),
        "hex": struct.pack("<IBBHIII I", 0x46524731, 3, 0, 0x0300, 1 << 22, 8, 4096, 3).hex().encode(),
    },
}

# The control protocol: one request line per seed, every command.
RULE = ('{"name":"cam","input":{"interface":"eth0","destination":"239.1.1.1","port":5000},'
        '"outputs":[{"interface":"eth1","destination":"239.2.2.2","port":6000,"ttl":8}]}')
SEEDS["control"] = {
    "list": b'{"version":1,"command":"list"}',
    "add": ('{"version":1,"command":"add","rule":%s}' % RULE).encode(),
    "remove-name": b'{"version":1,"command":"remove","name":"cam"}',
    "remove-key": b'{"version":1,"command":"remove","key":{"interface":"eth0","destination":"239.1.1.1","port":5000}}',
    "save": b'{"version":1,"command":"save","path":"/tmp/relay.toml"}',
    "set-workers": b'{"version":1,"command":"set_workers","workers":"0,2-3","class":"video"}',
    "stats": b'{"version":1,"command":"stats"}',
    "reload": b'{"version":1,"command":"reload"}',
}

# Configurations: the README's, classes, every section, and one large enough to be read piece
# by piece. Interfaces eth0, eth1, eth2 and tun0 are the ones the config target knows.
BASIC = b"""[relay]
workers = "all"
fanout = "cpu"

[[rule]]
name = "camera-1"
input = { interface = "eth0", destination = "239.1.1.1", port = 5000 }
outputs = [
  { interface = "eth1", destination = "239.2.2.2", port = 6000, ttl = 8 },
  { interface = "eth2", destination = "10.0.0.20", port = 6000 },
]
"""
CLASSES = b"""[[class]]
name = "video"
cpus = "0-1"

[[class]]
name = "bulk"
cpus = "2-3"

[[rule]]
name = "camera-1"
class = "video"
input = { interface = "eth0", destination = "239.1.1.1", port = 5000 }
outputs = [ { interface = "eth1", destination = "239.2.2.2", port = 6000 } ]

[[rule]]
name = "bulk-1"
class = "bulk"
input = { interface = "eth1", destination = "239.9.9.9", port = 7000 }
outputs = [ { interface = "tun0", destination = "203.0.113.9", port = 7000 } ]
"""
SECTIONS = b"""[relay]
cpus = "1,3"
fanout = "hash"
metrics = "127.0.0.1:9469"

[ring]
version = "v2"
busy_poll_us = 2000

[autoscale]
min_workers = 1

[[rule]]
name = "tagged"
input = { interface = "eth0", destination = "239.1.1.2", port = 5001 }

[[rule.outputs]]
interface = "eth1"
destination = "239.3.3.3"
port = 6001
"""
MANY = BASIC + b"".join(
    b'\n[[rule]]\nname = "r%d"\ninput = { interface = "eth0", destination = "239.1.%d.%d", port = %d }\n'
    b'outputs = [ { interface = "eth1", destination = "239.2.2.2", port = %d } ]\n'
    % (i, i // 250, i % 250 + 1, 5000 + i, 6000 + i) for i in range(40))
SEEDS["config"] = {"basic": BASIC, "classes": CLASSES, "sections": SECTIONS, "many": MANY}

# State files: flags, the body's length (2 bytes), the body (after the headers the target
# writes), then the journal's lines (after its header).
JOURNAL = (b'{"remove":["camera-1"],"add":[]}\n'
           b'{"remove":[],"add":[%s]}\n' % RULE.encode())
SEEDS["state"] = {
    "snapshot": b"\0" + struct.pack(">H", len(BASIC)) + BASIC,
    "journal": b"\0" + struct.pack(">H", len(BASIC)) + BASIC + JOURNAL,
    "journal-cut": b"\0" + struct.pack(">H", len(BASIC)) + BASIC + JOURNAL[:-5],
    "journal-damaged": b"\0" + struct.pack(">H", len(BASIC)) + BASIC + b'{"remove":["nobody"],"add":[]}\n' + JOURNAL,
    "no-journal": b"\x08" + struct.pack(">H", len(CLASSES)) + CLASSES,
}

for target, seeds in SEEDS.items():
    os.makedirs(os.path.join("corpus", target), exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join("corpus", target, "seed-" + name), "wb") as f:
            f.write(data)
