//! What one received frame costs a worker's data path, [`Datapath::handle`]: parse, look up,
//! count, and write the rule's one ring output into a 2048-byte buffer.
//!
//! `handle/plain` is a rule without stream options; it is the figure to compare across changes
//! to the data path (build the bench at both commits and run them side by side). The others
//! show what the stream options cost a rule that has them: `mpegts` and `rtp_mpegts` inspect
//! a synthetic stream (seven TS packets a datagram), `guarded` has a `max_pps` it never
//! reaches.
//!
//! Run with `cargo bench -p relay-bin --bench worker`.

use criterion::{Criterion, Throughput};
use relay_bin::config::ConfigFile;
use relay_bin::worker::{Datapath, Outputs, RxChecksum, Written};
use relay_rules::inspect::synth::TsSynth;
use relay_rules::wire::{EtherType, EthernetFrame, Ipv4Packet, PROTOCOL_UDP, UdpPacket};
use relay_rules::{
    CompiledOutput, Datagram, FrameTemplate, InterfaceFacts, Interfaces, Limits, RuleSet, RuleTable,
};
use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Frames per timed batch; times are reported per frame.
const BATCH: usize = 1024;
const ETH0: u32 = 2;
const SENDER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// Seven 188-byte transport stream packets, the usual datagram of a video stream.
const PAYLOAD: usize = 7 * 188;

/// Outputs that write every ring datagram into one scratch buffer, as a transmit slot would.
struct Scratch {
    slot: [u8; 2048],
    written: usize,
}

impl Outputs for Scratch {
    fn write_datagram(
        &mut self,
        _: u32,
        template: &FrameTemplate,
        input: &Datagram<'_>,
        ip_id: u16,
        _: bool,
    ) -> Written {
        match template.write(input, ip_id, &mut self.slot) {
            Ok(len) => {
                self.written += len;
                Written::Queued
            }
            Err(_) => Written::TooBig,
        }
    }

    fn queue(&mut self, _: &CompiledOutput, _: SocketAddr, _: &[u8]) -> Written {
        Written::Unopened
    }
}

fn interfaces() -> Interfaces {
    let facts = |name: &str, index, last: u8, address| InterfaceFacts {
        name: name.to_owned(),
        index,
        mac: Some([2, 0, 0, 0, 0, last]),
        mtu: 1500,
        ipv4: vec![address],
        ipv6: Vec::new(),
    };
    [
        facts("eth0", ETH0, 2, Ipv4Addr::new(10, 0, 0, 1)),
        facts("eth1", 3, 3, Ipv4Addr::new(10, 1, 0, 1)),
    ]
    .into_iter()
    .collect()
}

/// A data path whose one rule is the `[[rule]]` table `options` completes.
fn datapath(options: &str) -> Datapath {
    let text = format!(
        "[[rule]]\nname = \"cam\"\n{options}\
         input = {{ interface = \"eth0\", destination = \"239.1.1.1\", port = 5000 }}\n\
         outputs = [{{ interface = \"eth1\", destination = \"239.2.2.2\", port = 6000 }}]\n"
    );
    let rules = ConfigFile::parse(&text)
        .expect("the bench rule parses")
        .rules;
    let set =
        RuleSet::new(rules, interfaces(), Limits::default()).expect("the bench rule is valid");
    Datapath::new(RuleTable::build(&set, 1))
}

/// A frame to 239.1.1.1:5000 carrying `payload`.
fn frame(payload: &[u8]) -> Vec<u8> {
    let destination = Ipv4Addr::new(239, 1, 1, 1);
    let udp_len = 8 + payload.len();
    let ip_len = 20 + udp_len;
    let mut frame = vec![0u8; 14 + ip_len];
    let mut ethernet = EthernetFrame::new_unchecked(&mut frame[..]);
    ethernet.set_dst_addr(relay_rules::replicate::multicast_mac(destination));
    ethernet.set_src_addr([2, 0, 0, 0, 0, 0x10]);
    ethernet.set_ethertype(EtherType::IPV4);
    let mut ip = Ipv4Packet::new_unchecked(&mut frame[14..]);
    ip.set_version_and_header_len(20);
    ip.set_total_len(u16::try_from(ip_len).expect("bench payloads fit an IPv4 packet"));
    ip.set_flags_and_offset(true, false, 0);
    ip.set_ttl(8);
    ip.set_protocol(PROTOCOL_UDP);
    ip.set_src_addr(SENDER);
    ip.set_dst_addr(destination);
    ip.fill_checksum();
    let mut udp = UdpPacket::new_unchecked(&mut frame[34..]);
    udp.set_src_port(40000);
    udp.set_dst_port(5000);
    udp.set_len(u16::try_from(udp_len).expect("bench payloads fit a UDP datagram"));
    udp.payload_mut().copy_from_slice(payload);
    udp.fill_checksum(SENDER, destination);
    frame
}

/// Times [`Datapath::handle`] over `frames` (cycled to [`BATCH`]) under `name`, after checking
/// that every frame is forwarded.
fn bench_handle(c: &mut Criterion, name: &str, mut datapath: Datapath, frames: &[Vec<u8>]) {
    let mut outputs = Scratch {
        slot: [0; 2048],
        written: 0,
    };
    for frame in frames {
        datapath.handle(ETH0, frame, None, RxChecksum::Verified, 1, &mut outputs);
    }
    let expected: usize = frames.iter().map(Vec::len).sum();
    assert_eq!(outputs.written, expected, "every bench frame is forwarded");
    let mut group = c.benchmark_group("handle");
    group.throughput(Throughput::Elements(BATCH as u64));
    let mut now = 0u64;
    group.bench_function(name, |b| {
        b.iter(|| {
            for frame in frames.iter().cycle().take(BATCH) {
                now += 1_000;
                datapath.handle(
                    ETH0,
                    black_box(frame),
                    None,
                    RxChecksum::Verified,
                    now,
                    &mut outputs,
                );
            }
        });
    });
    group.finish();
    black_box(outputs.written);
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let plain: Vec<Vec<u8>> = vec![frame(&[0x47; PAYLOAD])];
    bench_handle(&mut c, "plain", datapath(""), &plain);
    bench_handle(
        &mut c,
        "guarded",
        datapath("max_pps = 1000000000000\n"),
        &plain,
    );
    // A stream of consecutive datagrams, cycled: each batch wraps once, one continuity
    // break per PID per batch, as a real stream's errors would be rare.
    for (name, rtp, inspect) in [
        ("mpegts", false, "mpegts"),
        ("rtp_mpegts", true, "rtp+mpegts"),
    ] {
        let mut synth = TsSynth::new(rtp);
        let mut payload = [0u8; TsSynth::MAX_DATAGRAM];
        let frames: Vec<Vec<u8>> = (0..BATCH as u32)
            .map(|i| {
                let len = synth.write(&mut payload, i * 90);
                frame(&payload[..len])
            })
            .collect();
        let options = format!("inspect = {inspect:?}\n");
        bench_handle(&mut c, name, datapath(&options), &frames);
    }
    c.final_summary();
}
