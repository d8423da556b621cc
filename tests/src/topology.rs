//! The three-namespace world of the relay's end-to-end tests.

use crate::{Netns, Veth, veth_pair};

/// Sender ↔ relay ↔ receiver, each in its own namespace, linked by two veth pairs.
///
/// ```text
///  sender ns                 relay ns                             receiver ns
///  snd0 192.0.2.10/24 ─veth─ rin0 198.51.100.1/24
///                            rout0 203.0.113.1/24 ─veth─ rcv0 203.0.113.2/24
/// ```
///
/// The sender's source address (192.0.2.10, TEST-NET-1) is on a different subnet than the relay's
/// input (198.51.100.1, TEST-NET-2) and the relay has no route back to it: exactly the
/// unroutable appliance the relay exists for, whose packets the kernel's reverse-path filter drops
/// (`rp_filter` is set to 1 in the relay namespace). Sender, relay output and receiver each
/// route 224.0.0.0/4 out of their link, so plain UDP sockets can send to and join groups there.
/// All four addresses are documentation ranges, so no traffic can leave the test.
///
/// Fields drop in order: links first, then namespaces.
#[derive(Debug)]
pub struct Topology {
    /// `snd0` (sender) ↔ `rin0` (relay).
    pub input: Veth,
    /// `rout0` (relay) ↔ `rcv0` (receiver).
    pub output: Veth,
    /// Sends multicast from the unroutable source.
    pub sender: Netns,
    /// Runs the relay; its input is `rin0`, its output `rout0`.
    pub relay: Netns,
    /// Joins the relayed groups on `rcv0`.
    pub receiver: Netns,
}

impl Topology {
    /// Gives the sender's address and its multicast route to `peer`, another link's end in
    /// the sender's namespace, taking the address from `from` when it still has it.
    pub fn send_through(&self, peer: &str, from: Option<&str>) {
        if let Some(from) = from {
            self.sender.ip(&[
                "addr",
                "del",
                &format!("{}/24", Topology::SENDER_ADDR),
                "dev",
                from,
            ]);
        }
        self.sender
            .add_addr(peer, &format!("{}/24", Topology::SENDER_ADDR));
        self.sender
            .ip(&["route", "replace", "224.0.0.0/4", "dev", peer]);
    }

    /// Sender's interface.
    pub const SENDER_IF: &str = "snd0";
    /// Sender's (unroutable) source address.
    pub const SENDER_ADDR: &str = "192.0.2.10";
    /// Relay's input interface.
    pub const RELAY_IN_IF: &str = "rin0";
    /// Relay's input address.
    pub const RELAY_IN_ADDR: &str = "198.51.100.1";
    /// Relay's output interface.
    pub const RELAY_OUT_IF: &str = "rout0";
    /// Relay's output (routable, re-sending) address.
    pub const RELAY_OUT_ADDR: &str = "203.0.113.1";
    /// Receiver's interface.
    pub const RECEIVER_IF: &str = "rcv0";
    /// Receiver's address (a unicast destination for head-end replication).
    pub const RECEIVER_ADDR: &str = "203.0.113.2";

    /// Builds the three namespaces and both links; `tag` goes into the namespace names.
    pub fn new(tag: &str) -> Topology {
        let sender = Netns::new(&format!("{tag}_s"));
        let relay = Netns::new(&format!("{tag}_r"));
        let receiver = Netns::new(&format!("{tag}_d"));
        let input = veth_pair(&sender, Self::SENDER_IF, &relay, Self::RELAY_IN_IF);
        let output = veth_pair(&relay, Self::RELAY_OUT_IF, &receiver, Self::RECEIVER_IF);

        sender.add_addr(Self::SENDER_IF, &format!("{}/24", Self::SENDER_ADDR));
        sender.add_multicast_route(Self::SENDER_IF);

        relay.add_addr(Self::RELAY_IN_IF, &format!("{}/24", Self::RELAY_IN_ADDR));
        relay.add_addr(Self::RELAY_OUT_IF, &format!("{}/24", Self::RELAY_OUT_ADDR));
        relay.add_multicast_route(Self::RELAY_OUT_IF);
        relay.sysctl("net.ipv4.conf.all.rp_filter", "1");
        relay.sysctl(
            &format!("net.ipv4.conf.{}.rp_filter", Self::RELAY_IN_IF),
            "1",
        );

        receiver.add_addr(Self::RECEIVER_IF, &format!("{}/24", Self::RECEIVER_ADDR));
        receiver.add_multicast_route(Self::RECEIVER_IF);

        Topology {
            input,
            output,
            sender,
            relay,
            receiver,
        }
    }
}
