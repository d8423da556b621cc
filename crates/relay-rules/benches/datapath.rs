//! What one received packet costs on the data path, and what a rule costs in memory.
//!
//! Per packet (reported per element over batches of [`BATCH`] frames): parse alone; parse and
//! rule lookup; parse, lookup and one rewrite into a 2048-byte buffer. Each with tables of 1,
//! 1,000 and 100,000 rules and payloads of 64 and 1316 bytes, and two access patterns:
//! `same` (the batch is one frame, so the rule and the frame stay in cache) and `spread` (1024
//! distinct frames, each for a rule drawn at random, so lookups touch many cache lines as a
//! worker serving many groups does). Then the time to validate and to compile 100,000 rules.
//!
//! Before timing a batch it checks that every frame of it is forwarded and that forwarding
//! allocates nothing. Before the timings it prints the heap bytes per rule of a 100,000-rule
//! table, counted by the global allocator below (live bytes after building minus before, so
//! temporaries of the build that were freed do not count).
//!
//! Run with `cargo bench -p relay-rules --bench datapath`.

use fanout_core::alloc_count::{self, CountingAllocator};
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use relay_rules::replicate::multicast_mac;
use relay_rules::wire::{self, EtherType, EthernetFrame, Ipv4Packet, PROTOCOL_UDP, UdpPacket};
use relay_rules::{
    CompiledOutput, CompiledRule, FrameTemplate, Input, InterfaceFacts, Interfaces, Limits, Output,
    Rule, RuleSet, RuleTable, Ttl,
};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Frames per timed batch; times are reported per frame.
const BATCH: usize = 1024;
const RULE_COUNTS: [usize; 3] = [1, 1_000, 100_000];
const PAYLOADS: [usize; 2] = [64, 1316];
/// Index of the input interface the frames arrive on.
const ETH0: u32 = 2;
const SENDER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

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

/// The group and port rule `i` matches: one group per rule (239.1.0.0 upwards) and eight ports.
fn input_key(i: usize) -> (Ipv4Addr, u16) {
    let i = u32::try_from(i).expect("bench rule counts fit in u32");
    (Ipv4Addr::from(0xef01_0000 + i), 5000 + (i % 8) as u16)
}

/// `count` any-source rules, each eth0 → one multicast output on eth1.
fn rule_set(count: usize) -> RuleSet {
    let rules = (0..count)
        .map(|i| {
            let (destination, port) = input_key(i);
            let index = u32::try_from(i).expect("bench rule counts fit in u32");
            Rule {
                name: format!("rule-{i}"),
                input: Input {
                    interface: "eth0".to_owned(),
                    destination: destination.into(),
                    port,
                    source: None,
                    vlan: None,
                },
                outputs: vec![Output {
                    interface: "eth1".to_owned(),
                    destination: Ipv4Addr::from(0xef80_0000 + index).into(),
                    port: 6000,
                    ttl: Ttl::Fixed(16),
                    source: None,
                    dscp: None,
                    vlan: None,
                }],
                class: None,
                inspect: None,
                rtp_clock_hz: None,
                max_pps: None,
                max_bps: None,
            }
        })
        .collect();
    RuleSet::new(rules, interfaces(), Limits::default()).expect("bench rules are valid")
}

/// A valid Ethernet/IPv4/UDP frame from [`SENDER`] to `destination:port`, with both checksums,
/// so that the rewrite takes its incremental UDP checksum path.
fn frame(destination: Ipv4Addr, port: u16, payload_len: usize) -> Vec<u8> {
    let udp_len = 8 + payload_len;
    let ip_len = 20 + udp_len;
    let mut frame = vec![0u8; 14 + ip_len];
    let mut ethernet = EthernetFrame::new_unchecked(&mut frame[..]);
    ethernet.set_dst_addr(multicast_mac(destination));
    ethernet.set_src_addr([2, 0, 0, 0, 0, 0x10]);
    ethernet.set_ethertype(EtherType::IPV4);

    let mut ip = Ipv4Packet::new_unchecked(&mut frame[14..]);
    ip.set_version_and_header_len(20);
    ip.set_tos(0xb8);
    ip.set_total_len(u16::try_from(ip_len).expect("bench payloads fit an IPv4 packet"));
    ip.set_ident(0x1234);
    ip.set_flags_and_offset(true, false, 0);
    ip.set_ttl(8);
    ip.set_protocol(PROTOCOL_UDP);
    ip.set_src_addr(SENDER);
    ip.set_dst_addr(destination);
    ip.fill_checksum();

    let mut udp = UdpPacket::new_unchecked(&mut frame[34..]);
    udp.set_src_port(40000);
    udp.set_dst_port(port);
    udp.set_len(u16::try_from(udp_len).expect("bench payloads fit a UDP datagram"));
    for (i, byte) in udp.payload_mut().iter_mut().enumerate() {
        *byte = i as u8;
    }
    udp.fill_checksum(SENDER, destination);
    frame
}

/// xorshift64: a reproducible choice of rules without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// A batch of frames to time: `same` repeats one frame, `spread` has one frame per entry for
/// a rule drawn at random from `rules`.
struct Batch {
    pattern: &'static str,
    frames: Vec<Vec<u8>>,
}

impl Batch {
    fn same(rules: usize, payload: usize) -> Batch {
        let (group, port) = input_key(rules - 1);
        Batch {
            pattern: "same",
            frames: vec![frame(group, port, payload)],
        }
    }

    fn spread(rules: usize, payload: usize) -> Batch {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (rules as u64) << 20 ^ payload as u64);
        let frames = (0..BATCH)
            .map(|_| {
                let (group, port) = input_key(rng.below(rules));
                frame(group, port, payload)
            })
            .collect();
        Batch {
            pattern: "spread",
            frames,
        }
    }

    /// The frames of one timed iteration: always [`BATCH`] of them.
    fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.frames.iter().cycle().take(BATCH).map(Vec::as_slice)
    }
}

fn parse_lookup<'t>(table: &'t RuleTable, frame: &[u8]) -> Option<&'t CompiledRule> {
    let datagram = wire::parse(frame, None).ok()?;
    table.lookup_datagram_vlan(ETH0, None, &datagram)
}

/// Parse, lookup and writing every ring output of the rule (one here) into `out`; returns the
/// bytes written, 0 for a frame that was dropped.
fn forward(table: &RuleTable, frame: &[u8], ip_id: u16, out: &mut [u8]) -> usize {
    let Ok(datagram) = wire::parse(frame, None) else {
        return 0;
    };
    let Some(rule) = table.lookup_datagram_vlan(ETH0, None, &datagram) else {
        return 0;
    };
    let mut written = 0;
    for output in &rule.outputs {
        if let CompiledOutput::Ring { template, .. } = output {
            written += write(template, &datagram, ip_id, out);
        }
    }
    written
}

fn write(
    template: &FrameTemplate,
    datagram: &wire::Datagram<'_>,
    ip_id: u16,
    out: &mut [u8],
) -> usize {
    template.write(datagram, ip_id, out).unwrap_or(0)
}

/// Checks once, outside the timings, that every frame of `batch` is forwarded, so that no
/// figure is the cost of a drop, and that forwarding allocates nothing.
fn assert_all_forwarded(table: &RuleTable, batch: &Batch, payload: usize) {
    let mut out = [0u8; 2048];
    let allocations = alloc_count::snapshot().allocations;
    let written: usize = batch
        .iter()
        .map(|frame| forward(table, frame, 1, &mut out))
        .sum();
    assert_eq!(
        alloc_count::snapshot().allocations,
        allocations,
        "parse, lookup and rewrite allocate nothing"
    );
    assert_eq!(
        written,
        BATCH * (14 + 20 + 8 + payload),
        "every bench frame has a rule with a ring output"
    );
    for frame in batch.iter().take(16) {
        let len = forward(table, frame, 1, &mut out);
        let output = wire::parse(&out[..len], None).expect("the rewritten frame parses");
        assert_eq!(output.payload.len(), payload);
    }
}

fn bench_parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Elements(BATCH as u64));
    for payload in PAYLOADS {
        for batch in [Batch::same(1_000, payload), Batch::spread(1_000, payload)] {
            let id = BenchmarkId::new(batch.pattern, format!("{payload}B"));
            group.bench_with_input(id, &batch, |b, batch| {
                b.iter(|| {
                    let mut ports = 0u32;
                    for frame in batch.iter() {
                        if let Ok(datagram) = wire::parse(black_box(frame), None) {
                            ports = ports.wrapping_add(u32::from(datagram.destination_port));
                        }
                    }
                    ports
                });
            });
        }
    }
    group.finish();
}

fn bench_forwarding(c: &mut Criterion, tables: &[(usize, RuleTable)]) {
    let mut lookup = c.benchmark_group("parse_lookup");
    lookup.throughput(Throughput::Elements(BATCH as u64));
    let mut rewrite_batches = Vec::new();
    for (rules, table) in tables {
        for payload in PAYLOADS {
            for batch in [Batch::same(*rules, payload), Batch::spread(*rules, payload)] {
                assert_all_forwarded(table, &batch, payload);
                let id = BenchmarkId::new(batch.pattern, format!("{rules}rules/{payload}B"));
                lookup.bench_with_input(id, &batch, |b, batch| {
                    b.iter(|| {
                        let mut found = 0u32;
                        for frame in batch.iter() {
                            if let Some(rule) = parse_lookup(table, black_box(frame)) {
                                found = found.wrapping_add(rule.id.0);
                            }
                        }
                        found
                    });
                });
                rewrite_batches.push((*rules, table, payload, batch));
            }
        }
    }
    lookup.finish();

    let mut rewrite = c.benchmark_group("parse_lookup_rewrite");
    rewrite.throughput(Throughput::Elements(BATCH as u64));
    let mut out = vec![0u8; 2048];
    let mut ip_id = 0u16;
    for (rules, table, payload, batch) in &rewrite_batches {
        let id = BenchmarkId::new(batch.pattern, format!("{rules}rules/{payload}B"));
        rewrite.bench_with_input(id, batch, |b, batch| {
            b.iter(|| {
                let mut bytes = 0usize;
                for frame in batch.iter() {
                    ip_id = ip_id.wrapping_add(1);
                    bytes += forward(table, black_box(frame), ip_id, black_box(&mut out[..]));
                }
                bytes
            });
        });
    }
    rewrite.finish();
}

fn bench_build(c: &mut Criterion, set: &RuleSet) {
    let mut group = c.benchmark_group("build_100000_rules");
    group.sample_size(10);
    group.bench_function("validate", |b| {
        b.iter_batched(
            || set.rules().to_vec(),
            |rules| RuleSet::new(rules, interfaces(), Limits::default()).map(|set| set.len()),
            criterion::BatchSize::LargeInput,
        );
    });
    group.bench_function("compile_table", |b| {
        b.iter(|| RuleTable::build(black_box(set), 1))
    });
    group.finish();
}

/// Prints the heap bytes a 100,000-rule table holds per rule, and the size of its parts.
fn report_memory(set: &RuleSet) {
    let before = alloc_count::snapshot().live;
    alloc_count::reset_peak();
    let started = Instant::now();
    let table = RuleTable::build(set, 1);
    let took = started.elapsed();
    let after = alloc_count::snapshot().live;
    let peak = alloc_count::snapshot().peak;
    let rules = table.len();
    let held = after.saturating_sub(before);
    println!(
        "table memory at {rules} rules: {held} heap bytes held = {:.1} bytes/rule \
         (peak during build {:.1} bytes/rule, inline RuleTable {} bytes; built once in {took:.1?})",
        held as f64 / rules as f64,
        peak.saturating_sub(before) as f64 / rules as f64,
        size_of::<RuleTable>(),
    );
    println!(
        "sizes: CompiledRule {} B, CompiledOutput {} B, FrameTemplate {} B",
        size_of::<CompiledRule>(),
        size_of::<CompiledOutput>(),
        size_of::<FrameTemplate>(),
    );
    drop(table);

    // One worker's table under `shard` placement over 8 workers: it holds an eighth of the rules.
    let before = alloc_count::snapshot().live;
    let shard = RuleTable::build_shard(set, 1, 0, 8);
    let held = alloc_count::snapshot().live.saturating_sub(before);
    println!(
        "shard 0 of 8: {} rules, {held} heap bytes held = {:.1} bytes/rule of the shard",
        shard.len(),
        held as f64 / shard.len().max(1) as f64,
    );
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();

    let largest = rule_set(RULE_COUNTS[2]);
    report_memory(&largest);

    bench_parse(&mut c);
    let tables: Vec<(usize, RuleTable)> = RULE_COUNTS
        .iter()
        .map(|&rules| {
            let table = if rules == largest.len() {
                RuleTable::build(&largest, 1)
            } else {
                RuleTable::build(&rule_set(rules), 1)
            };
            (rules, table)
        })
        .collect();
    bench_forwarding(&mut c, &tables);
    bench_build(&mut c, &largest);
    c.final_summary();
}
