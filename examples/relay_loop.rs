//! A minimal multicast relay in one thread: UDP datagrams for one group and port arrive on one
//! interface and leave another, rewritten to another group and port.
//!
//! This is a relay worker's data path with everything else taken away. The interface facts
//! come from `fanout_core::iface`, the rule and its compiled table from relay-rules, frames from
//! a TPACKET_V3 receive ring read in place, and output frames are written from the rule's header
//! template straight into a transmit ring, which is kicked once per received block, not once
//! per packet. Every frame that is not relayed is counted, by reason, never a panic.
//!
//! ```text
//! cargo run -p fanout-relay-examples --example relay_loop -- IN_IFACE GROUP:PORT OUT_IFACE GROUP:PORT [SECONDS]
//! ```
//!
//! OUT_IFACE must have Ethernet headers and an IPv4 address (the source of relayed datagrams);
//! SECONDS defaults to 10. Needs CAP_NET_RAW (run as root).
//!
//! # Try it
//!
//! A sender, the relay and a receiver in three namespaces; the sender's datagrams to
//! 239.1.1.1:5000 reach the receiver as 239.2.2.2:6000 from 10.78.2.1:
//!
//! ```text
//! for ns in rl-src rl-relay rl-dst; do ip netns add $ns; done
//! ip link add rl-in netns rl-relay type veth peer name src0 netns rl-src
//! ip link add rl-out netns rl-relay type veth peer name dst0 netns rl-dst
//! ip -n rl-src addr add 10.78.1.2/24 dev src0 && ip -n rl-src link set src0 up
//! ip -n rl-src route add 224.0.0.0/4 dev src0
//! ip -n rl-relay link set rl-in up
//! ip -n rl-relay addr add 10.78.2.1/24 dev rl-out && ip -n rl-relay link set rl-out up
//! ip -n rl-dst addr add 10.78.2.2/24 dev dst0 && ip -n rl-dst link set dst0 up
//! cargo build -p fanout-relay-examples --examples
//! ip netns exec rl-relay cargo run -q -p fanout-relay-examples --example relay_loop -- \
//!     rl-in 239.1.1.1:5000 rl-out 239.2.2.2:6000 4 &
//! ip netns exec rl-dst python3 -c 'import socket
//! s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("239.2.2.2", 6000))
//! s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
//!              socket.inet_aton("239.2.2.2") + socket.inet_aton("10.78.2.2"))
//! s.settimeout(3); got = []
//! try:
//!     while True: got.append(s.recvfrom(2048))
//! except socket.timeout: print("receiver got", len(got), "datagrams, last", got[-1:])' &
//! sleep 1
//! ip netns exec rl-src python3 -c 'import socket, time
//! s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
//! for i in range(100): s.sendto(b"frame %d" % i, ("239.1.1.1", 5000)); time.sleep(0.01)
//! for i in range(20): s.sendto(b"no rule", ("239.1.1.1", 5001))'
//! wait
//! for ns in rl-src rl-relay rl-dst; do ip netns del $ns; done
//! ```

use std::error::Error;
use std::net::SocketAddrV4;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use fanout_core::ring::RetireTimeout;
use fanout_core::socket::LinkMembership;
use fanout_core::{Frame, InterfaceInfo, RxRingBuilder, TxRing, TxRingBuilder};
use relay_rules::replicate::multicast_mac;
use relay_rules::{CompiledOutput, DropReason, Input, InterfaceFacts, Limits, Output, Rule, Ttl};
use relay_rules::{RuleCounters, RuleSet, RuleTable, VlanTag, wire};

const USAGE: &str = "usage: relay_loop IN_IFACE GROUP:PORT OUT_IFACE GROUP:PORT [SECONDS]";

/// `TP_STATUS_CSUMNOTREADY` (`linux/if_packet.h`): the UDP checksum field holds only the
/// pseudo-header sum, as in frames a local sender passes over veth with checksum offload.
const TP_STATUS_CSUMNOTREADY: u32 = 1 << 3;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("relay_loop: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, from, output, to, rest @ ..] = args.as_slice() else {
        return Err(USAGE.into());
    };
    let (from, to) = (endpoint(from)?, endpoint(to)?);
    let seconds: u64 = match rest {
        [] => 10,
        [seconds] => seconds.parse().map_err(|_| USAGE)?,
        _ => return Err(USAGE.into()),
    };
    let mut relay = Relay::new(input, from, output, to)?;
    let mut rx = RxRingBuilder::new(input.as_str())
        .block_size(1 << 18)
        .block_count(8)
        .retire_timeout(RetireTimeout::Millis(1))
        .ignore_outgoing(true)
        .build()?;
    // Lets the group's frames through a NIC's multicast filter (veth has none).
    let group_mac = multicast_mac(*from.ip());
    rx.socket()
        .add_membership(LinkMembership::Multicast(group_mac))?;
    let mut tx = TxRingBuilder::new(output.as_str()).build()?;
    println!("relaying {input} {from} -> {output} {to} for {seconds} s");

    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        rx.wait(Duration::from_millis(100))?;
        while let Some(block) = rx.next_block() {
            for frame in block.frames() {
                relay.handle(&frame, &mut tx);
            }
            tx.flush()?; // one send(2) for the whole block
        } // the block goes back to the kernel here
    }
    tx.drain(Duration::from_secs(1))?;

    relay.print_counts();
    let (kernel, sent) = (rx.statistics()?, tx.counters());
    println!(
        "rx ring: kernel offered {}, dropped {}; tx ring: sent {}, refused {}, kicks {}",
        kernel.packets, kernel.drops, sent.completed, sent.wrong_format, sent.kicks
    );
    Ok(())
}

/// The per-frame half of the relay: the rule table, and what happened to each frame.
struct Relay {
    table: RuleTable,
    /// Index of IN_IFACE: the ring is bound to it, so every frame arrived there.
    in_index: u32,
    /// IPv4 identification of the next output packet (the relay originates them).
    ip_id: u16,
    per_rule: Vec<RuleCounters>,
    counts: Counts,
}

/// What happened to the frames received.
#[derive(Default)]
struct Counts {
    received: u64,
    dropped: [u64; DropReason::COUNT],
    no_rule: u64,
    forwarded: u64,
    tx_full: u64,
    too_big: u64,
}

impl Relay {
    /// A table of one rule, `input` `from` to `output` `to`, checked against the interfaces'
    /// facts as the kernel reports them now.
    fn new(
        input: &str,
        from: SocketAddrV4,
        output: &str,
        to: SocketAddrV4,
    ) -> Result<Self, Box<dyn Error>> {
        let (in_facts, out_facts) = (facts(input)?, facts(output)?);
        if !to.ip().is_multicast() || !out_facts.has_ethernet() {
            return Err("the output must be a group on an Ethernet interface: \
                        this example only writes frames into a TX ring"
                .into());
        }
        let in_index = in_facts.index;
        let rule = Rule {
            name: "example".into(),
            input: Input {
                interface: input.into(),
                destination: (*from.ip()).into(),
                port: from.port(),
                source: None,
                vlan: None,
            },
            outputs: vec![Output {
                interface: output.into(),
                destination: (*to.ip()).into(),
                port: to.port(),
                ttl: Ttl::Fixed(16),
                source: None, // the first IPv4 address of `output`
                dscp: None,
                vlan: None,
            }],
            class: None,
            inspect: None,
            rtp_clock_hz: None,
            max_pps: None,
            max_bps: None,
        };
        let interfaces = [in_facts, out_facts].into_iter().collect();
        let set = RuleSet::new(vec![rule], interfaces, Limits::default())?;
        let table = RuleTable::build(&set, 1);
        Ok(Relay {
            per_rule: vec![RuleCounters::default(); table.len()],
            table,
            in_index,
            ip_id: 0,
            counts: Counts::default(),
        })
    }

    /// Parses `frame`, looks it up, and writes one output frame per ring output into `tx`.
    fn handle(&mut self, frame: &Frame<'_>, tx: &mut TxRing) {
        let counts = &mut self.counts;
        counts.received += 1;
        let vlan = frame.vlan_tci().map(|tci| VlanTag {
            tpid: frame.vlan_tpid().unwrap_or(0x8100),
            tci,
        });
        let mut datagram = match wire::parse(frame.data(), vlan) {
            Ok(datagram) => datagram,
            Err(reason) => {
                counts.dropped[reason.index()] += 1;
                return;
            }
        };
        if frame.status() & TP_STATUS_CSUMNOTREADY != 0 {
            datagram.udp_checksum = 0; // a partial sum cannot be updated: send none
        }
        let Some(rule) = self
            .table
            .lookup_datagram_vlan(self.in_index, None, &datagram)
        else {
            counts.no_rule += 1;
            return;
        };
        let received_ns = u64::try_from(frame.timestamp().as_nanos()).unwrap_or(u64::MAX);
        self.per_rule[rule.id.index()].record(datagram.payload.len(), received_ns);
        for output in &rule.outputs {
            let CompiledOutput::Ring { template, .. } = output else {
                continue; // socket outputs: not in this example
            };
            let Some(mut slot) = tx.reserve() else {
                counts.tx_full += 1;
                continue;
            };
            self.ip_id = self.ip_id.wrapping_add(1);
            match template.write(&datagram, self.ip_id, slot.buffer()) {
                Ok(len) => {
                    slot.commit(len);
                    counts.forwarded += 1;
                }
                Err(_) => counts.too_big += 1, // the uncommitted slot stays free
            }
        }
    }

    fn print_counts(&self) {
        let c = &self.counts;
        println!(
            "received {}, forwarded {}, no rule {}, tx ring full {}, too big {}",
            c.received, c.forwarded, c.no_rule, c.tx_full, c.too_big
        );
        for reason in DropReason::ALL {
            match c.dropped[reason.index()] {
                0 => {}
                count => println!("  dropped {}: {count}", reason.as_str()),
            }
        }
        for rule in self.table.rules() {
            let RuleCounters { packets, bytes, .. } = self.per_rule[rule.id.index()];
            let (name, key) = (&rule.name, &rule.key);
            println!("rule {name} ({key}): {packets} datagrams, {bytes} payload bytes");
        }
    }
}

/// `GROUP:PORT` from the command line.
fn endpoint(text: &str) -> Result<SocketAddrV4, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not GROUP:PORT, e.g. 239.1.1.1:5000"))
}

/// What the rules need to know about interface `name`, asked of the kernel.
fn facts(name: &str) -> Result<InterfaceFacts, fanout_core::IfaceError> {
    let info = InterfaceInfo::lookup(name)?;
    let ipv4 = info.ipv4.iter().map(|prefix| prefix.addr).collect();
    let ipv6 = info.ipv6.clone();
    Ok(InterfaceFacts {
        name: info.name,
        index: info.index,
        mac: info.mac,
        mtu: info.mtu,
        ipv4,
        ipv6,
    })
}
