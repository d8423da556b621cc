//! A veth pair linking two namespaces.

use std::process::Command;

use crate::Netns;

/// A veth pair with one end in each of two namespaces, both ends up.
///
/// The pair dies with either namespace, so normally [`Netns`]'s `Drop` removes it; this guard's
/// `Drop` deletes it too, so a pair made between long-lived namespaces (or the root namespace)
/// does not outlive its test. Deleting an already-gone pair is not an error.
#[derive(Debug)]
pub struct Veth {
    a_ns: String,
    a_if: String,
    b_ns: String,
    b_if: String,
}

/// Creates a veth pair `a_if` (in `a`) ↔ `b_if` (in `b`) and brings both ends up.
///
/// The names only need to be unique within their namespace; they must be at most 15 bytes.
/// Panics with `ip`'s message if the pair cannot be made.
pub fn veth_pair(a: &Netns, a_if: &str, b: &Netns, b_if: &str) -> Veth {
    assert!(
        a_if.len() <= 15 && b_if.len() <= 15,
        "interface names are at most 15 bytes: {a_if}, {b_if}"
    );
    // Created directly inside `a` (ip -n) with the peer directly inside `b`, so the names never
    // pass through, or clash in, the root namespace.
    a.ip(&[
        "link",
        "add",
        a_if,
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        b.name(),
    ]);
    let veth = Veth {
        a_ns: a.name().to_owned(),
        a_if: a_if.to_owned(),
        b_ns: b.name().to_owned(),
        b_if: b_if.to_owned(),
    };
    a.link_up(a_if);
    b.link_up(b_if);
    veth
}

impl Veth {
    /// The end in the first namespace given to [`veth_pair`].
    pub fn a_if(&self) -> &str {
        &self.a_if
    }

    /// The end in the second namespace given to [`veth_pair`].
    pub fn b_if(&self) -> &str {
        &self.b_if
    }

    /// The namespace holding [`Veth::a_if`].
    pub fn a_ns(&self) -> &str {
        &self.a_ns
    }

    /// The namespace holding [`Veth::b_if`].
    pub fn b_ns(&self) -> &str {
        &self.b_ns
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        // Quiet: the namespace (and with it the pair) is usually gone already.
        let _ = Command::new("ip")
            .args(["-n", &self.a_ns, "link", "del", &self.a_if])
            .output();
    }
}
