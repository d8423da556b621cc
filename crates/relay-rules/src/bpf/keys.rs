//! Socket filters that split UDP traffic between worker classes by (destination, port, VLAN)
//! key.
//!
//! A worker class owns some rules. Each receive ring of a named class gets a
//! [`KeySense::Listed`] filter over the keys its rules use, and the default class's rings get a
//! [`KeySense::Unlisted`] filter over the keys of every named class. The kernel then keeps the
//! classes apart: a named class's workers never see the default class's traffic, so a flood on
//! a default group costs them nothing, and the default workers never see a named class's keys.
//! Frames that carry no key a rule could use (still-tagged frames, later fragments, bad IPv4
//! headers) go to the default class only, which parses and counts them as it always has.
//!
//! The VLAN is part of the key, as it is of a rule's: the port and the VLAN id of the tag in
//! metadata (0 for an untagged or priority-tagged frame) are compared as one word,
//! `port | vid << 16`, so a tagged frame never matches an untagged key nor one of another VLAN.
//!
//! Cost per packet: after a fixed prologue (22 instructions at most) that checks the frame and
//! loads the key, the program is a binary search over the sorted keys, first over the distinct
//! addresses, then over the (port, VLAN) words of the address found: for `m` distinct addresses
//! and `p` such words of the matching address, about `⌈log₂ m⌉ + ⌈log₂ p⌉ + 3` comparisons, plus at most one
//! `ja` or copied `ret` per branch too far for the 8-bit offset of a conditional jump. The program
//! takes about two instructions per key that shares its address with others and four per key
//! with an address of its own, so [`KEY_FILTER_MAX_KEYS`] IPv4 keys always fit in
//! `BPF_MAXINSNS`.
//!
//! IPv6 keys are searched the same way, word by word: the four words of the destination, then
//! the (port, VLAN) word, after a fixed IPv6 prologue that walks the extension headers
//! ([`crate::wire::MAX_EXTENSION_HEADERS`] at most, as the parser) to find the port. An IPv6
//! key with an address of its own takes about ten instructions, so about 350 such keys fit.

use super::ipv6::{DESTINATION, ETH_P_IPV6, walk};
use super::{
    BPF_ABS, BPF_ALU, BPF_AND, BPF_B, BPF_H, BPF_IND, BPF_JA, BPF_JEQ, BPF_JGE, BPF_JGT, BPF_JMP,
    BPF_JSET, BPF_K, BPF_LD, BPF_LDX, BPF_LSH, BPF_MAXINSNS, BPF_MEM, BPF_MISC, BPF_MSH, BPF_OR,
    BPF_RET, BPF_ST, BPF_TAX, BPF_TXA, BPF_W, BPF_X, Instruction, Program, SKF_AD_OFF,
    SKF_AD_PROTOCOL, SKF_AD_VLAN_TAG, SKF_AD_VLAN_TAG_PRESENT, SKF_NET_OFF, ip_prefilter,
};
use crate::wire::NEXT_HEADER_FRAGMENT;
use std::net::{IpAddr, Ipv4Addr};
use thiserror::Error;

const ETH_P_IP: u32 = 0x0800;
const ETH_P_8021Q: u32 = 0x8100;
const ETH_P_8021AD: u32 = 0x88a8;
const IPPROTO_UDP: u32 = 17;
/// Keep the whole frame (the kernel caps it at the ring's room), as [`udp_prefilter`] does.
const ACCEPT: u32 = u32::MAX;
const REJECT: u32 = 0;
/// Farthest a conditional jump reaches: `jt` and `jf` are 8-bit instruction counts.
const MAX_OFFSET: usize = u8::MAX as usize;

/// Number of distinct keys that always fit in one filter, whatever they are.
///
/// The worst case is every key with an address of its own, about four instructions per key:
/// 1000 such keys take 4062 instructions of the kernel's 4096 (1008 is the most that fit). Sets that share addresses
/// fit far more keys (up to about 2000 on one address): [`key_filter`] only refuses a set whose
/// program is actually too long.
pub const KEY_FILTER_MAX_KEYS: usize = 1000;

/// A key a class filter matches: a rule's destination, UDP port and VLAN (`None`: untagged).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FilterKey {
    /// Destination address, IPv4 or IPv6.
    pub destination: IpAddr,
    /// UDP destination port.
    pub port: u16,
    /// VLAN id (1..=4094), `None` for untagged frames.
    pub vlan: Option<u16>,
}

/// A key as an IPv4 filter compares it: (address, `port | vid << 16`).
type Words4 = (u32, u32);
/// A key as an IPv6 filter compares it: the address's four words, then `port | vid << 16`.
type Words6 = [u32; 5];

impl FilterKey {
    /// The (port, VLAN) word.
    fn port_word(self) -> u32 {
        let vid = u32::from(self.vlan.unwrap_or(0) & 0x0fff);
        u32::from(self.port) | vid << 16
    }
}

impl From<(Ipv4Addr, u16)> for FilterKey {
    /// The key of untagged frames to `destination:port`.
    fn from((destination, port): (Ipv4Addr, u16)) -> Self {
        FilterKey::from((IpAddr::V4(destination), port, None))
    }
}

impl From<(Ipv4Addr, u16, Option<u16>)> for FilterKey {
    fn from((destination, port, vlan): (Ipv4Addr, u16, Option<u16>)) -> Self {
        FilterKey::from((IpAddr::V4(destination), port, vlan))
    }
}

impl From<(IpAddr, u16)> for FilterKey {
    /// The key of untagged frames to `destination:port`.
    fn from((destination, port): (IpAddr, u16)) -> Self {
        FilterKey::from((destination, port, None))
    }
}

impl From<(IpAddr, u16, Option<u16>)> for FilterKey {
    fn from((destination, port, vlan): (IpAddr, u16, Option<u16>)) -> Self {
        FilterKey {
            destination,
            port,
            vlan,
        }
    }
}

/// Which frames a key filter keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeySense {
    /// Only UDP frames (IPv4 whole datagrams and first fragments, IPv6 datagrams) whose key is
    /// in the set: the filter of a named worker class. Everything else is dropped.
    Listed,
    /// Everything [`ip_prefilter`] keeps, except UDP frames whose key is in the set: the filter
    /// of the default worker class.
    Unlisted,
}

/// Why no key filter was built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum KeyFilterError {
    /// The program would exceed `BPF_MAXINSNS`; the caller can fall back to [`super::ip_prefilter`].
    #[error(
        "a filter over {keys} distinct keys would exceed BPF_MAXINSNS ({BPF_MAXINSNS} \
         instructions); {limit} keys always fit"
    )]
    TooManyKeys {
        /// Distinct keys asked for.
        keys: usize,
        /// [`KEY_FILTER_MAX_KEYS`].
        limit: usize,
    },
}

/// A classic BPF socket filter (for `SO_ATTACH_FILTER`) that keeps or drops IPv4 UDP frames by
/// their (destination address, UDP destination port, VLAN) key, as `sense` says; a key given
/// as `(Ipv4Addr, u16)` is one of untagged frames.
///
/// Keys may come in any order and repeat. The filter reads the packet as
/// [`super::steering_program`] does: the EtherType from `SKF_AD_PROTOCOL`, every packet byte
/// relative to `SKF_NET_OFF`, the port after the IP options. A frame has a key when its
/// EtherType is IPv4, its first byte 0x45..=0x4f, its protocol UDP and its fragment offset 0.
///
/// With [`KeySense::Listed`] an empty set keeps nothing. With [`KeySense::Unlisted`] an empty set
/// gives [`super::udp_prefilter`] itself. Otherwise one difference from it remains: an IPv4 UDP frame
/// too short to hold its destination address or port is dropped, because a classic program ends
/// with 0 when a load runs past the packet and cannot portably test the length beforehand
/// (where the packet data starts depends on the socket).
///
/// Returns [`KeyFilterError::TooManyKeys`] when the program would not fit in `BPF_MAXINSNS`;
/// that never happens for [`KEY_FILTER_MAX_KEYS`] keys or fewer.
///
/// IPv6 frames: [`KeySense::Listed`] keeps those whose key is listed; [`KeySense::Unlisted`]
/// keeps what [`ip_prefilter`] keeps when some key is IPv6 (and rejects IPv6 otherwise, as
/// [`super::udp_prefilter`] does); [`key_filter_with`] says it outright.
pub fn key_filter<K: Into<FilterKey>>(
    keys: impl IntoIterator<Item = K>,
    sense: KeySense,
) -> Result<Program, KeyFilterError> {
    let keys: Vec<FilterKey> = keys.into_iter().map(Into::into).collect();
    let ipv6 = keys.iter().any(|key| key.destination.is_ipv6());
    key_filter_with(keys, sense, ipv6)
}

/// [`key_filter`], saying whether the relay has IPv6 rules (`ipv6_rules`): a
/// [`KeySense::Unlisted`] filter then keeps the IPv6 frames [`ip_prefilter`] keeps (less the
/// listed keys), as the default class needs when it holds IPv6 rules the set does not list.
pub fn key_filter_with<K: Into<FilterKey>>(
    keys: impl IntoIterator<Item = K>,
    sense: KeySense,
    ipv6_rules: bool,
) -> Result<Program, KeyFilterError> {
    key_program(
        keys,
        sense,
        Verdicts {
            keep: ACCEPT,
            drop: REJECT,
        },
        ipv6_rules,
    )
}

/// What a key program returns for the frames it keeps and for the others: a socket filter's
/// snap lengths, or a tc classifier's actions ([`super::consume_program`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct Verdicts {
    /// Returned for the frames [`KeySense`] keeps.
    pub(super) keep: u32,
    /// Returned for every other frame (except those a load runs past the end of, which end
    /// the program with 0, as every classic program does).
    pub(super) drop: u32,
}

/// [`key_filter`], returning `verdicts`.
pub(super) fn key_program<K: Into<FilterKey>>(
    keys: impl IntoIterator<Item = K>,
    sense: KeySense,
    verdicts: Verdicts,
    ipv6_rules: bool,
) -> Result<Program, KeyFilterError> {
    let mut keys4: Vec<Words4> = Vec::new();
    let mut keys6: Vec<Words6> = Vec::new();
    for key in keys {
        let key: FilterKey = key.into();
        match key.destination {
            IpAddr::V4(address) => keys4.push((u32::from(address), key.port_word())),
            IpAddr::V6(address) => {
                let w = address.segments().map(u32::from);
                keys6.push([
                    w[0] << 16 | w[1],
                    w[2] << 16 | w[3],
                    w[4] << 16 | w[5],
                    w[6] << 16 | w[7],
                    key.port_word(),
                ]);
            }
        }
    }
    keys4.sort_unstable();
    keys4.dedup();
    keys6.sort_unstable();
    keys6.dedup();
    let count = keys4.len() + keys6.len();
    let too_many = KeyFilterError::TooManyKeys {
        keys: count,
        limit: KEY_FILTER_MAX_KEYS,
    };
    let ipv6_traffic = match sense {
        KeySense::Listed => !keys6.is_empty(),
        KeySense::Unlisted => ipv6_rules || !keys6.is_empty(),
    };
    if count == 0 {
        return Ok(match sense {
            KeySense::Listed => {
                Program::new(vec![Instruction::stmt(BPF_RET | BPF_K, verdicts.drop)])
            }
            KeySense::Unlisted => ip_prefilter(ipv6_traffic),
        });
    }
    // Two instructions per key is the least the search takes (all keys on one address); do not
    // build what cannot fit.
    if count > BPF_MAXINSNS / 2 {
        return Err(too_many);
    }
    let mut builder = Builder::default();
    builder.filter(&keys4, &keys6, ipv6_traffic, sense, verdicts);
    let mut ops = builder.resolve();
    if relax(&mut ops).is_err() {
        return Err(too_many);
    }
    Ok(assemble(&ops))
}

/// A branch target while the tree is built: an index into [`Builder::positions`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Label(usize);

/// Where a conditional jump goes.
#[derive(Debug, Clone, Copy)]
enum To {
    /// The instruction right after the jump.
    Next,
    At(Label),
}

/// An instruction whose branch targets are `T`: labels while building, then positions in the
/// program (which move as [`relax`] inserts instructions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op<T> {
    /// Falls through to the next instruction.
    Stmt(Instruction),
    /// `ret #k`.
    Ret(u32),
    /// A conditional jump (`BPF_JMP | op | BPF_K`) on `A` against `k`.
    Jump { code: u16, k: u32, jt: T, jf: T },
    /// `ja`, which reaches anywhere forward.
    Goto(T),
}

impl<T> Op<T> {
    fn map<U>(self, mut f: impl FnMut(T) -> U) -> Op<U> {
        match self {
            Op::Stmt(instruction) => Op::Stmt(instruction),
            Op::Ret(k) => Op::Ret(k),
            Op::Jump { code, k, jt, jf } => Op::Jump {
                code,
                k,
                jt: f(jt),
                jf: f(jf),
            },
            Op::Goto(target) => Op::Goto(f(target)),
        }
    }
}

/// Emits the filter with symbolic targets.
#[derive(Default)]
struct Builder {
    ops: Vec<Op<Label>>,
    /// Position of each label's instruction, once bound.
    positions: Vec<Option<usize>>,
}

impl Builder {
    fn label(&mut self) -> Label {
        self.positions.push(None);
        Label(self.positions.len() - 1)
    }

    /// Makes `label` point at the next instruction emitted.
    fn bind(&mut self, label: Label) {
        self.positions[label.0] = Some(self.ops.len());
    }

    fn stmt(&mut self, code: u16, k: u32) {
        self.ops.push(Op::Stmt(Instruction::stmt(code, k)));
    }

    fn jump(&mut self, op: u16, k: u32, jt: To, jf: To) {
        let next = self.label();
        let target = |to| match to {
            To::Next => next,
            To::At(label) => label,
        };
        self.ops.push(Op::Jump {
            code: BPF_JMP | op | BPF_K,
            k,
            jt: target(jt),
            jf: target(jf),
        });
        self.bind(next);
    }

    /// The whole filter over sorted, distinct `keys` (of which one family may be empty), with
    /// an IPv6 part when `ipv6` (IPv6 frames are otherwise rejected).
    fn filter(
        &mut self,
        keys: &[Words4],
        keys6: &[Words6],
        ipv6: bool,
        sense: KeySense,
        verdicts: Verdicts,
    ) {
        let accept = self.label();
        let reject = self.label();
        let (found, missed) = match sense {
            KeySense::Listed => (accept, reject),
            KeySense::Unlisted => (reject, accept),
        };
        // Frames udp_prefilter keeps that carry no key: the default class counts them.
        let keyless = missed;

        let ipv6_part = self.label();
        let not_ipv4 = if ipv6 { ipv6_part } else { reject };
        // EtherType after VLAN untagging; a tag left in the frame hides what follows it.
        self.stmt(BPF_LD | BPF_W | BPF_ABS, SKF_AD_OFF + SKF_AD_PROTOCOL);
        match sense {
            KeySense::Listed if ipv6 => self.jump(BPF_JEQ, ETH_P_IP, To::Next, To::At(ipv6_part)),
            KeySense::Listed => self.jump(BPF_JEQ, ETH_P_IP, To::Next, To::At(reject)),
            KeySense::Unlisted => {
                let ipv4 = self.label();
                self.jump(BPF_JEQ, ETH_P_IP, To::At(ipv4), To::Next);
                self.jump(BPF_JEQ, ETH_P_8021Q, To::At(accept), To::Next);
                if ipv6 {
                    self.jump(BPF_JEQ, ETH_P_8021AD, To::At(accept), To::Next);
                    self.jump(BPF_JEQ, ETH_P_IPV6, To::At(not_ipv4), To::At(reject));
                } else {
                    self.jump(BPF_JEQ, ETH_P_8021AD, To::At(accept), To::At(reject));
                }
                self.bind(ipv4);
            }
        }
        // Protocol UDP, read whatever the version says, as udp_prefilter does.
        self.stmt(BPF_LD | BPF_B | BPF_ABS, SKF_NET_OFF + 9);
        self.jump(BPF_JEQ, IPPROTO_UDP, To::Next, To::At(reject));
        // Version 4 and IHL 5..=15: the first byte is 0x45..=0x4f.
        self.stmt(BPF_LD | BPF_B | BPF_ABS, SKF_NET_OFF);
        self.jump(BPF_JGT, 0x4f, To::At(keyless), To::Next);
        self.jump(BPF_JGE, 0x45, To::Next, To::At(keyless));
        // Fragment offset 0: a first fragment carries the UDP header, a later one does not.
        self.stmt(BPF_LD | BPF_H | BPF_ABS, SKF_NET_OFF + 6);
        self.jump(BPF_JSET, 0x1fff, To::At(keyless), To::Next);
        // M[0] = destination port (after the IP options).
        self.stmt(BPF_LDX | BPF_B | BPF_MSH, SKF_NET_OFF);
        self.stmt(BPF_LD | BPF_H | BPF_IND, SKF_NET_OFF + 2);
        self.stmt(BPF_ST, 0);
        // X = VLAN id << 16, or 0 (the A the test leaves) for an untagged frame.
        self.stmt(
            BPF_LD | BPF_W | BPF_ABS,
            SKF_AD_OFF + SKF_AD_VLAN_TAG_PRESENT,
        );
        let untagged = self.label();
        self.jump(BPF_JEQ, 0, To::At(untagged), To::Next);
        self.stmt(BPF_LD | BPF_W | BPF_ABS, SKF_AD_OFF + SKF_AD_VLAN_TAG);
        self.stmt(BPF_ALU | BPF_AND | BPF_K, 0x0fff);
        self.stmt(BPF_ALU | BPF_LSH | BPF_K, 16);
        self.bind(untagged);
        self.stmt(BPF_MISC | BPF_TAX, 0);
        // X = port | VLAN id << 16, A = destination address.
        self.stmt(BPF_LD | BPF_MEM, 0);
        self.stmt(BPF_ALU | BPF_OR | BPF_X, 0);
        self.stmt(BPF_MISC | BPF_TAX, 0);
        self.stmt(BPF_LD | BPF_W | BPF_ABS, SKF_NET_OFF + 16);

        let groups: Vec<&[(u32, u32)]> = keys.chunk_by(|a, b| a.0 == b.0).collect();
        self.addresses(&groups, found, missed);

        if ipv6 {
            self.bind(ipv6_part);
            self.ipv6(keys6, found, missed, reject);
        }

        self.bind(accept);
        self.ops.push(Op::Ret(verdicts.keep));
        self.bind(reject);
        self.ops.push(Op::Ret(verdicts.drop));
    }

    /// The IPv6 part: version 6, the extension-header walk, then the search over `keys` word by
    /// word. A fragment header is keyless (`missed`, as an IPv4 later fragment is); anything
    /// else that is not UDP is rejected.
    fn ipv6(&mut self, keys: &[Words6], found: Label, missed: Label, reject: Label) {
        self.stmt(BPF_LD | BPF_B | BPF_ABS, SKF_NET_OFF);
        self.stmt(BPF_ALU | BPF_AND | BPF_K, 0xf0);
        self.jump(BPF_JEQ, 0x60, To::Next, To::At(reject));
        for instruction in walk() {
            self.ops.push(Op::Stmt(instruction));
        }
        let udp = self.label();
        self.jump(BPF_JEQ, IPPROTO_UDP, To::At(udp), To::Next);
        self.jump(
            BPF_JEQ,
            u32::from(NEXT_HEADER_FRAGMENT),
            To::At(missed),
            To::At(reject),
        );
        self.bind(udp);
        // M[0] = port | VLAN id << 16.
        self.stmt(BPF_LD | BPF_H | BPF_IND, SKF_NET_OFF + 2);
        self.stmt(BPF_ST, 0);
        self.stmt(
            BPF_LD | BPF_W | BPF_ABS,
            SKF_AD_OFF + SKF_AD_VLAN_TAG_PRESENT,
        );
        let untagged = self.label();
        self.jump(BPF_JEQ, 0, To::At(untagged), To::Next);
        self.stmt(BPF_LD | BPF_W | BPF_ABS, SKF_AD_OFF + SKF_AD_VLAN_TAG);
        self.stmt(BPF_ALU | BPF_AND | BPF_K, 0x0fff);
        self.stmt(BPF_ALU | BPF_LSH | BPF_K, 16);
        self.bind(untagged);
        self.stmt(BPF_MISC | BPF_TAX, 0);
        self.stmt(BPF_LD | BPF_MEM, 0);
        self.stmt(BPF_ALU | BPF_OR | BPF_X, 0);
        self.stmt(BPF_ST, 0);
        self.stmt(BPF_LD | BPF_W | BPF_ABS, SKF_NET_OFF + DESTINATION);
        self.words(keys, 0, found, missed);
    }

    /// Search for A, word `depth` of the IPv6 key, among the sorted `keys`; a match loads the
    /// next word (the next address word, or the (port, VLAN) word from M[0]) and goes on.
    fn words(&mut self, keys: &[Words6], depth: usize, found: Label, missed: Label) {
        if depth == 4 {
            let ports: Vec<Words4> = keys.iter().map(|key| (0, key[4])).collect();
            self.ports(&ports, found, missed);
            return;
        }
        let groups: Vec<&[Words6]> = keys.chunk_by(|a, b| a[depth] == b[depth]).collect();
        self.word_groups(&groups, depth, found, missed);
    }

    fn word_groups(&mut self, groups: &[&[Words6]], depth: usize, found: Label, missed: Label) {
        match groups {
            [] => self.ops.push(Op::Goto(missed)),
            [group] => {
                let word = group.first().map_or(0, |key| key[depth]);
                self.jump(BPF_JEQ, word, To::Next, To::At(missed));
                if depth < 3 {
                    let at = DESTINATION + 4 * (depth as u32 + 1);
                    self.stmt(BPF_LD | BPF_W | BPF_ABS, SKF_NET_OFF + at);
                } else {
                    self.stmt(BPF_LD | BPF_MEM, 0);
                }
                self.words(group, depth + 1, found, missed);
            }
            _ => {
                let (left, right) = groups.split_at(groups.len() / 2);
                let pivot = right
                    .first()
                    .and_then(|group| group.first())
                    .map_or(0, |key| key[depth]);
                let higher = self.label();
                self.jump(BPF_JGE, pivot, To::At(higher), To::Next);
                self.word_groups(left, depth, found, missed);
                self.bind(higher);
                self.word_groups(right, depth, found, missed);
            }
        }
    }

    /// Binary search for A among the addresses of `groups` (each the keys of one address, in
    /// address order); X holds the port.
    fn addresses(&mut self, groups: &[&[(u32, u32)]], found: Label, missed: Label) {
        match groups {
            [] => self.ops.push(Op::Goto(missed)),
            [group] => {
                let address = group.first().map_or(0, |key| key.0);
                self.jump(BPF_JEQ, address, To::Next, To::At(missed));
                self.stmt(BPF_MISC | BPF_TXA, 0);
                self.ports(group, found, missed);
            }
            _ => {
                let (left, right) = groups.split_at(groups.len() / 2);
                let pivot = right
                    .first()
                    .and_then(|group| group.first())
                    .map_or(0, |key| key.0);
                let higher = self.label();
                self.jump(BPF_JGE, pivot, To::At(higher), To::Next);
                self.addresses(left, found, missed);
                self.bind(higher);
                self.addresses(right, found, missed);
            }
        }
    }

    /// Binary search for A among the (port, VLAN) words of `keys` (one address, in order).
    fn ports(&mut self, keys: &[(u32, u32)], found: Label, missed: Label) {
        match keys {
            [] => self.ops.push(Op::Goto(missed)),
            [(_, port)] => self.jump(BPF_JEQ, *port, To::At(found), To::At(missed)),
            _ => {
                let (left, right) = keys.split_at(keys.len() / 2);
                let pivot = right.first().map_or(0, |key| key.1);
                let higher = self.label();
                self.jump(BPF_JGE, pivot, To::At(higher), To::Next);
                self.ports(left, found, missed);
                self.bind(higher);
                self.ports(right, found, missed);
            }
        }
    }

    /// The instructions with labels replaced by positions.
    fn resolve(self) -> Vec<Op<usize>> {
        let positions = self.positions;
        self.ops
            .into_iter()
            .map(|op| {
                op.map(|label| {
                    positions[label.0].expect("the builder binds every label it jumps to")
                })
            })
            .collect()
    }
}

/// The program is longer than `BPF_MAXINSNS`.
struct TooLong;

/// Brings every conditional target within the 255 instructions a `jt`/`jf` offset reaches, by
/// sending far branches through a stand-in placed in reach: a copy of the `ret` they go to, or
/// a `ja` to their target.
///
/// It walks backwards and inserts a stand-in right after the jump that needs it, unless one to
/// the same place is already in reach. Inserting after position `i` moves what lies past `i` as
/// a whole, so the branches already fixed (all past `i`) stay fixed and one pass suffices; the
/// stand-ins of the later jumps serve the earlier ones, so a far return costs about one
/// instruction per 256.
fn relax(ops: &mut Vec<Op<usize>>) -> Result<(), TooLong> {
    let mut at = ops.len();
    while at > 0 {
        at -= 1;
        // A stand-in inserted for one branch pushes the other's target one further, so look
        // again until both reach (three fixes at most).
        while let Op::Jump { jt, jf, .. } = ops[at] {
            let far = |target: usize| target - at - 1 > MAX_OFFSET;
            let (taken, target) = match (far(jt), far(jf)) {
                (true, _) => (true, jt),
                (false, true) => (false, jf),
                (false, false) => break,
            };
            let stand_in = match ops[target] {
                Op::Ret(k) => Op::Ret(k),
                _ => Op::Goto(target),
            };
            let reach = at + 1..=at + 1 + MAX_OFFSET;
            let via = match ops[reach].iter().position(|op| *op == stand_in) {
                Some(offset) => at + 1 + offset,
                None => {
                    insert(ops, at + 1, stand_in);
                    if ops.len() > BPF_MAXINSNS {
                        return Err(TooLong);
                    }
                    at + 1
                }
            };
            if let Op::Jump { jt, jf, .. } = &mut ops[at] {
                *(if taken { jt } else { jf }) = via;
            }
        }
    }
    if ops.len() > BPF_MAXINSNS {
        return Err(TooLong);
    }
    Ok(())
}

/// Inserts `op` at position `at`, moving every target at or past it along.
fn insert(ops: &mut Vec<Op<usize>>, at: usize, op: Op<usize>) {
    let shift = |target: usize| if target >= at { target + 1 } else { target };
    for existing in ops.iter_mut() {
        *existing = existing.map(shift);
    }
    ops.insert(at, op.map(shift));
}

/// The kernel's encoding of relaxed `ops`: targets become offsets from the next instruction.
fn assemble(ops: &[Op<usize>]) -> Program {
    let offset = |at: usize, target: usize| target - at - 1;
    let short = |at: usize, target: usize| {
        u8::try_from(offset(at, target)).expect("relax leaves every conditional target in reach")
    };
    let instructions = ops
        .iter()
        .enumerate()
        .map(|(at, op)| match *op {
            Op::Stmt(instruction) => instruction,
            Op::Ret(k) => Instruction::stmt(BPF_RET | BPF_K, k),
            Op::Jump { code, k, jt, jf } => {
                Instruction::jump(code, k, short(at, jt), short(at, jf))
            }
            Op::Goto(target) => Instruction::stmt(
                BPF_JMP | BPF_JA,
                u32::try_from(offset(at, target)).expect("a program of at most 4096 instructions"),
            ),
        })
        .collect();
    Program::new(instructions)
}

#[cfg(test)]
mod tests;
