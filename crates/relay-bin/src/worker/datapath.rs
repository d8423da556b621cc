//! What a worker does with one frame, apart from the rings: parse, look up, write every output,
//! count. Kept free of I/O behind [`Outputs`] so it is tested on plain bytes.

use crate::counters::{RuleCount, StreamCount, WorkerCounters};
use relay_rules::replicate::may_segment;
use relay_rules::stream::{Share, StreamState};
use relay_rules::table::Insertion;
use relay_rules::table::{CompiledOutput, RuleTable, TableError};
use relay_rules::wire::{self, DropReason, VlanTag};
use relay_rules::{Datagram, FrameTemplate, Interfaces, Rule, RuleCounters};
use std::collections::HashMap;
use std::net::SocketAddr;

/// What became of a datagram handed to [`Outputs::write_datagram`] or [`Outputs::queue`]. Each
/// outcome but `Queued` is a datagram dropped before it reached the kernel, counted under its
/// own name; what the kernel refuses afterwards is counted by errno where it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Written into a transmit slot, to be sent with the next kick, or queued in a socket's
    /// batch (`forwarded`).
    Queued,
    /// The transmit ring on that interface had no free slot (`tx_full`).
    RingFull,
    /// Too big to write: the IP packet would exceed the output's MTU, or the frame its transmit
    /// slot or the datagram its socket batch slot (`too_big`).
    TooBig,
    /// The output's transmit ring or socket is not open: opening it failed when its rule was
    /// added, and the worker logged why (`unopened`).
    Unopened,
    /// The output decrements the TTL and the datagram arrived with 1 or 0 (`ttl_expired`).
    TtlExpired,
}

/// What the kernel said of a received frame's UDP checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxChecksum {
    /// As it came off the wire, verified by nobody.
    Unverified,
    /// Verified on receipt (`TP_STATUS_CSUM_VALID`: the NIC or the stack checked it).
    Verified,
    /// Only the pseudo-header part (`TP_STATUS_CSUMNOTREADY`): a frame sent by this host, seen
    /// before the checksum offload filled it in.
    Partial,
}

/// Where output frames go: transmit ring slots and socket batches.
pub trait Outputs {
    /// Writes `input` as `template` rewrites it into the transmit ring on `ifindex`: into a
    /// slot of its own, or, when `segmentable`, appended to the segmented frame of the same
    /// output that is still open there (see `relay_rules::replicate::Segments`).
    fn write_datagram(
        &mut self,
        ifindex: u32,
        template: &FrameTemplate,
        input: &Datagram<'_>,
        ip_id: u16,
        segmentable: bool,
    ) -> Written;
    /// Queues `payload` for a socket output.
    fn queue(
        &mut self,
        output: &CompiledOutput,
        destination: SocketAddr,
        payload: &[u8],
    ) -> Written;
}

/// The per-frame work of a worker and its counters.
#[derive(Debug)]
pub struct Datapath {
    table: RuleTable,
    rules: Vec<RuleCounters>,
    /// Per rule id: the inspection and storm guard state of a rule that has stream options.
    streams: Vec<Option<Box<StreamState>>>,
    /// This worker's share of each rule's storm guard limits.
    guard_share: Share,
    received: u64,
    forwarded: u64,
    no_rule: u64,
    malformed: [u64; DropReason::COUNT],
    tx_full: u64,
    too_big: u64,
    unopened: u64,
    ttl_expired: u64,
    socket_errors: u64,
    ip_id: u16,
}

impl Datapath {
    /// A data path serving `table`, counters at zero.
    pub fn new(table: RuleTable) -> Self {
        let rules = vec![RuleCounters::default(); table.id_capacity()];
        let mut datapath = Datapath {
            table,
            rules,
            streams: Vec::new(),
            guard_share: Share::WHOLE,
            received: 0,
            forwarded: 0,
            no_rule: 0,
            malformed: [0; DropReason::COUNT],
            tx_full: 0,
            too_big: 0,
            unopened: 0,
            ttl_expired: 0,
            socket_errors: 0,
            ip_id: 0,
        };
        datapath.streams = datapath.fresh_streams(|_| None);
        datapath
    }

    /// Gives this worker `share` of each rule's storm guard limits from now on (the guards
    /// start anew).
    pub fn set_guard_share(&mut self, share: Share) {
        self.guard_share = share;
        self.streams = self.fresh_streams(|_| None);
    }

    /// Stream states for the rules of the table that have stream options: `kept` gives the
    /// state a rule had before (by name), used if its options did not change.
    fn fresh_streams(
        &self,
        mut kept: impl FnMut(&str) -> Option<Box<StreamState>>,
    ) -> Vec<Option<Box<StreamState>>> {
        let mut streams: Vec<Option<Box<StreamState>>> = Vec::new();
        streams.resize_with(self.table.id_capacity(), || None);
        for rule in self.table.rules() {
            if let Some(options) = rule.stream {
                let state = kept(&rule.name)
                    .filter(|state| state.options() == options)
                    .unwrap_or_else(|| Box::new(StreamState::new(options, self.guard_share)));
                streams[rule.id.index()] = Some(state);
            }
        }
        streams
    }

    /// Frames handed to [`Datapath::handle`] so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The table being served.
    pub fn table(&self) -> &RuleTable {
        &self.table
    }

    /// Handles one frame received on `ifindex`: `vlan` is the tag the kernel took off, if any,
    /// and `checksum` what the kernel said of its UDP checksum.
    ///
    /// A partial checksum cannot be updated incrementally, so such a datagram leaves with no
    /// UDP checksum (0, which IPv4 allows) rather than a wrong one, unless it goes out in a
    /// segmented frame, which computes it; a complete one is updated for the rewritten
    /// headers, and only a verified one may be computed anew in a segmented frame.
    #[inline]
    pub fn handle<O: Outputs>(
        &mut self,
        ifindex: u32,
        frame: &[u8],
        vlan: Option<VlanTag>,
        checksum: RxChecksum,
        now_ns: u64,
        outputs: &mut O,
    ) {
        self.received += 1;
        let mut datagram = match wire::parse(frame, vlan) {
            Ok(datagram) => datagram,
            Err(reason) => {
                self.malformed[reason.index()] += 1;
                return;
            }
        };
        if checksum == RxChecksum::Partial {
            datagram.udp_checksum = 0;
        }
        let segmentable = may_segment(&datagram, checksum == RxChecksum::Verified);
        let vlan = match wire::vlan_key(&datagram) {
            Ok(vlan) => vlan,
            Err(reason) => {
                self.malformed[reason.index()] += 1;
                return;
            }
        };
        let Some(rule) = self.table.lookup_datagram_vlan(ifindex, vlan, &datagram) else {
            self.no_rule += 1;
            return;
        };
        let id = rule.id.index();
        if rule.stream.is_some()
            && let Some(stream) = self.streams.get_mut(id).and_then(Option::as_deref_mut)
        {
            stream.inspect(datagram.payload, now_ns);
            if !stream.admit(datagram.payload.len(), now_ns) {
                return;
            }
        }
        self.rules[id].record(datagram.payload.len(), now_ns);
        for output in &rule.outputs {
            let written = match output {
                CompiledOutput::Ring { ifindex, template } => {
                    self.ip_id = self.ip_id.wrapping_add(1);
                    let ip_id = self.ip_id;
                    // Datagrams of a segmented frame share its header, and so its TTL.
                    let segmentable = segmentable && !template.decrements_ttl();
                    outputs.write_datagram(*ifindex, template, &datagram, ip_id, segmentable)
                }
                CompiledOutput::Socket { destination, .. } => {
                    outputs.queue(output, *destination, datagram.payload)
                }
            };
            match written {
                Written::Queued => self.forwarded += 1,
                Written::RingFull => self.tx_full += 1,
                Written::TooBig => self.too_big += 1,
                Written::Unopened => self.unopened += 1,
                Written::TtlExpired => self.ttl_expired += 1,
            }
        }
    }

    /// Counts a frame the receive ring truncated (`tp_snaplen < tp_len`): received, and dropped
    /// under [`DropReason::RingTruncated`] without being parsed, since a rewrite of its start
    /// would relay a datagram cut short.
    #[inline]
    pub fn truncated(&mut self) {
        self.received += 1;
        self.malformed[DropReason::RingTruncated.index()] += 1;
    }

    /// Removes the rule called `name`, if there is one.
    pub fn remove(&mut self, name: &str) {
        self.table.remove(name);
    }

    /// Compiles and adds `rule`, whose interfaces `interfaces` describes, and returns its
    /// outputs; its counters start at zero. A rule of another shard is not this worker's: it is
    /// skipped and has no outputs here.
    pub fn insert(
        &mut self,
        rule: &Rule,
        interfaces: &Interfaces,
    ) -> Result<&[CompiledOutput], TableError> {
        match self.table.insert(rule, interfaces) {
            Ok(Insertion::Inserted(id)) => {
                let capacity = self.table.id_capacity();
                if self.rules.len() < capacity {
                    self.rules.resize(capacity, RuleCounters::default());
                }
                self.rules[id.index()] = RuleCounters::default();
                if self.streams.len() < capacity {
                    self.streams.resize_with(capacity, || None);
                }
                let stream = self.table.get(id).and_then(|rule| rule.stream);
                self.streams[id.index()] =
                    stream.map(|options| Box::new(StreamState::new(options, self.guard_share)));
                Ok(self
                    .table
                    .get(id)
                    .map_or(&[], |rule| rule.outputs.as_slice()))
            }
            Ok(Insertion::OtherShard(_)) => Ok(&[]),
            Err(error) => Err(error),
        }
    }

    /// Sets the generation of the table after a change.
    pub fn set_generation(&mut self, generation: u64) {
        self.table.set_generation(generation);
    }

    /// Serves `table` from now on; rules of the same name keep their counters.
    pub fn replace(&mut self, table: RuleTable) {
        let old: HashMap<&str, usize> = self
            .table
            .rules()
            .map(|rule| (rule.name.as_str(), rule.id.index()))
            .collect();
        let mut rules = vec![RuleCounters::default(); table.id_capacity()];
        for rule in table.rules() {
            if let Some(&index) = old.get(rule.name.as_str()) {
                rules[rule.id.index()] = self.rules[index];
            }
        }
        let mut old_streams: HashMap<String, Box<StreamState>> = HashMap::new();
        for rule in self.table.rules() {
            if let Some(state) = self.streams.get_mut(rule.id.index()).and_then(Option::take) {
                old_streams.insert(rule.name.clone(), state);
            }
        }
        self.table = table;
        self.streams = self.fresh_streams(|name| old_streams.remove(name));
        self.rules = rules;
    }

    /// Counts datagrams the kernel refused on a socket output after they were queued (and
    /// counted as forwarded).
    pub fn count_socket_errors(&mut self, failed: usize) {
        self.socket_errors += failed as u64;
        self.forwarded = self.forwarded.saturating_sub(failed as u64);
    }

    /// A copy of the counters, for the supervisor.
    pub fn counters(&self, cpu: u32) -> WorkerCounters {
        let mut counters = WorkerCounters {
            cpu,
            received: self.received,
            forwarded: self.forwarded,
            no_rule: self.no_rule,
            tx_full: self.tx_full,
            too_big: self.too_big,
            unopened: self.unopened,
            ttl_expired: self.ttl_expired,
            socket_errors: self.socket_errors,
            ..WorkerCounters::default()
        };
        counters.set_refused(&self.malformed);
        for rule in self.table.rules() {
            let count = &self.rules[rule.id.index()];
            let stream = self
                .streams
                .get(rule.id.index())
                .and_then(Option::as_deref)
                .map(StreamCount::of);
            if count.packets > 0 || stream.is_some() {
                counters.rules.insert(
                    rule.name.clone(),
                    RuleCount {
                        packets: count.packets,
                        bytes: count.bytes,
                        stream,
                    },
                );
            }
        }
        counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_rules::{Input, InterfaceFacts, Limits, Output, RuleSet};
    use std::net::Ipv4Addr;

    /// Outputs that answer every ring write and every socket queue as told.
    struct Scripted {
        ring: Written,
        socket: Written,
    }

    impl Outputs for Scripted {
        fn write_datagram(
            &mut self,
            _: u32,
            _: &FrameTemplate,
            _: &Datagram<'_>,
            _: u16,
            _: bool,
        ) -> Written {
            self.ring
        }

        fn queue(&mut self, _: &CompiledOutput, _: SocketAddr, _: &[u8]) -> Written {
            self.socket
        }
    }

    fn interfaces() -> Interfaces {
        let facts = |name: &str, index, mac, ipv4: &[Ipv4Addr]| InterfaceFacts {
            name: name.into(),
            index,
            mac,
            mtu: 1500,
            ipv4: ipv4.to_vec(),
            ipv6: Vec::new(),
        };
        [
            facts("in0", 2, Some([2, 0, 0, 0, 0, 1]), &[]),
            facts(
                "out0",
                3,
                Some([2, 0, 0, 0, 0, 2]),
                &[Ipv4Addr::new(10, 1, 1, 1)],
            ),
            // No Ethernet header: its output goes through a socket.
            facts("tun0", 4, None, &[Ipv4Addr::new(10, 2, 2, 2)]),
        ]
        .into_iter()
        .collect()
    }

    /// `cam`: 239.1.1.1:5000 on in0 to a ring output on out0 and a socket output on tun0.
    fn rule() -> Rule {
        let output = |interface: &str, destination, port| Output {
            interface: interface.into(),
            destination,
            port,
            ttl: relay_rules::Ttl::Fixed(8),
            source: None,
            dscp: None,
            vlan: None,
        };
        Rule {
            name: "cam".into(),
            input: Input {
                interface: "in0".into(),
                destination: Ipv4Addr::new(239, 1, 1, 1).into(),
                port: 5000,
                source: None,
                vlan: None,
            },
            outputs: vec![
                output("out0", Ipv4Addr::new(239, 2, 2, 2).into(), 6000),
                output("tun0", Ipv4Addr::new(10, 9, 9, 9).into(), 7000),
            ],
            class: None,
            inspect: None,
            rtp_clock_hz: None,
            max_pps: None,
            max_bps: None,
        }
    }

    /// A frame from 192.0.2.10 to 239.1.1.1:5000 carrying `payload`.
    fn frame_with(payload: &[u8]) -> Vec<u8> {
        let mut frame = frame();
        frame.truncate(42);
        frame.extend_from_slice(payload);
        let ip_len = u16::try_from(frame.len() - 14).expect("a test frame fits");
        frame[16..18].copy_from_slice(&ip_len.to_be_bytes());
        frame[38..40].copy_from_slice(&(ip_len - 20).to_be_bytes());
        // No UDP checksum: IPv4 allows it, and the test does not rewrite the payload.
        frame[40..42].copy_from_slice(&[0, 0]);
        wire::Ipv4Packet::new_unchecked(&mut frame[14..]).fill_checksum();
        frame
    }

    #[test]
    fn an_inspected_rule_counts_its_stream_and_its_guard_drops_the_excess() {
        use relay_rules::inspect::{Inspect, synth::TsSynth};
        let mut inspected = rule();
        inspected.inspect = Some(Inspect::MpegTs);
        // A burst of 1/10 s: 10 datagrams, then almost no credit in the 30 us of the test.
        inspected.max_pps = Some(100);
        let set = RuleSet::new(vec![inspected], interfaces(), Limits::default()).expect("valid");
        let mut datapath = Datapath::new(RuleTable::build(&set, 1));
        let mut outputs = Scripted {
            ring: Written::Queued,
            socket: Written::Queued,
        };
        let mut synth = TsSynth::new(false);
        let mut payload = [0u8; TsSynth::MAX_DATAGRAM];
        for i in 0..30u64 {
            let len = synth.write(&mut payload, 0);
            if i == 12 {
                continue; // lost on the way
            }
            let frame = frame_with(&payload[..len]);
            datapath.handle(
                2,
                &frame,
                None,
                RxChecksum::Verified,
                i * 1_000,
                &mut outputs,
            );
        }
        let counters = datapath.counters(0);
        let cam = &counters.rules["cam"];
        assert_eq!(cam.packets, 10, "the burst");
        let stream = cam.stream.as_ref().expect("stream counters");
        assert_eq!(stream.limited_packets, 19);
        assert_eq!(stream.limited_bytes, 19 * 7 * 188);
        let ts = stream.ts.expect("MPEG-TS counters");
        assert_eq!(
            (ts.packets, ts.cc_errors, ts.pids),
            (29 * 7, 4, 4),
            "inspected before the guard"
        );
        assert_eq!(
            stream.cc_errors_by_pid().into_values().collect::<Vec<_>>(),
            [1; 4]
        );
        assert_eq!(stream.rtp, None);
        assert_eq!(counters.forwarded, 20, "10 datagrams to two outputs");

        // A rule without options has no stream counters, and keeps its counters when the
        // table is replaced, as an inspected rule keeps its state.
        let mut plain = self::datapath();
        plain.handle(2, &frame(), None, RxChecksum::Verified, 0, &mut outputs);
        assert_eq!(plain.counters(0).rules["cam"].stream, None);
        datapath.replace(RuleTable::build(&set, 2));
        let kept = datapath.counters(0);
        assert_eq!(
            kept.rules["cam"].stream.as_ref().map(|s| s.limited_packets),
            Some(19)
        );
    }

    /// A frame from 192.0.2.10 to 239.1.1.1:5000 carrying `hello`.
    fn frame() -> Vec<u8> {
        let mut frame = vec![
            0x01, 0x00, 0x5e, 0x01, 0x01, 0x01, 2, 0, 0, 0, 0, 9, 0x08, 0x00,
        ];
        frame.extend_from_slice(&[
            0x45, 0, 0, 33, 0, 1, 0, 0, 5, 17, 0, 0, 192, 0, 2, 10, 239, 1, 1, 1,
        ]);
        wire::Ipv4Packet::new_unchecked(&mut frame[14..]).fill_checksum();
        frame.extend_from_slice(&[0x13, 0x88, 0x13, 0x88, 0, 13, 0, 0]);
        frame.extend_from_slice(b"hello");
        frame
    }

    fn datapath() -> Datapath {
        let set = RuleSet::new(vec![rule()], interfaces(), Limits::default()).expect("valid");
        Datapath::new(RuleTable::build(&set, 1))
    }

    #[test]
    fn each_drop_is_counted_under_its_own_name() {
        let mut datapath = datapath();
        let frame = frame();
        for (ring, socket) in [
            (Written::Queued, Written::Queued),
            (Written::RingFull, Written::TooBig),
            (Written::TooBig, Written::Unopened),
            (Written::Unopened, Written::Queued),
        ] {
            let mut outputs = Scripted { ring, socket };
            datapath.handle(2, &frame, None, RxChecksum::Verified, 0, &mut outputs);
        }
        datapath.count_socket_errors(1);
        let counters = datapath.counters(0);
        assert_eq!(counters.received, 4);
        assert_eq!(counters.rules["cam"].packets, 4);
        assert_eq!(
            (
                counters.forwarded,
                counters.tx_full,
                counters.too_big,
                counters.unopened,
                counters.socket_errors
            ),
            // Queued 3, then one of them refused by the kernel.
            (2, 1, 2, 2, 1)
        );
    }

    #[test]
    fn rules_match_by_vlan_and_double_tags_are_dropped() {
        let mut tagged = rule();
        tagged.name = "v100".into();
        tagged.input.vlan = Some(100);
        let set = RuleSet::new(vec![rule(), tagged], interfaces(), Limits::default())
            .expect("one key per VLAN");
        let mut datapath = Datapath::new(RuleTable::build(&set, 1));
        let mut outputs = Scripted {
            ring: Written::Queued,
            socket: Written::Queued,
        };
        let tag = |vid: u16| VlanTag {
            tpid: 0x8100,
            tci: 0x2000 | vid,
        };
        let untagged = frame();
        // The same frame with an 802.1Q tag of VLAN 100 in it.
        let mut in_frame = untagged[..12].to_vec();
        in_frame.extend_from_slice(&[0x81, 0x00, 0x00, 100]);
        in_frame.extend_from_slice(&untagged[12..]);
        let mut handle = |frame: &[u8], offloaded| {
            datapath.handle(2, frame, offloaded, RxChecksum::Verified, 0, &mut outputs);
        };
        handle(&untagged, None);
        handle(&untagged, Some(tag(0))); // priority-tagged: untagged
        handle(&untagged, Some(tag(100)));
        handle(&in_frame, None);
        handle(&untagged, Some(tag(200)));
        handle(&in_frame, Some(tag(7)));
        let counters = datapath.counters(0);
        assert_eq!(counters.rules["cam"].packets, 2);
        assert_eq!(counters.rules["v100"].packets, 2);
        assert_eq!(counters.no_rule, 1, "VLAN 200 has no rule");
        assert_eq!(counters.malformed.get("double_tagged"), Some(&1));
        assert_eq!(counters.received, 6);
    }

    #[test]
    fn a_refused_insert_keeps_the_tables_reason() {
        let mut datapath = datapath();
        let error = datapath
            .insert(&rule(), &interfaces())
            .expect_err("cam is there already");
        assert_eq!(error, TableError::DuplicateName { rule: "cam".into() });
        let mut other = rule();
        other.name = "other".into();
        other.input.port = 5001;
        other.outputs[0].interface = "gone0".into();
        assert!(
            matches!(
                datapath.insert(&other, &interfaces()),
                Err(TableError::UnknownInterface { interface, .. }) if interface == "gone0"
            ),
            "an output on an interface the facts lack"
        );
    }
}
