//! A veth pair linking two namespaces: the relay's [`relay_bin::netns::veth_pair`], panicking.

use crate::Netns;

pub use relay_bin::netns::Veth;

/// Creates a veth pair `a_if` (in `a`) ↔ `b_if` (in `b`) and brings both ends up.
///
/// The names only need to be unique within their namespace; they must be at most 15 bytes.
/// Panics with `ip`'s message if the pair cannot be made. The returned guard deletes the pair
/// on drop (the pair also dies with either namespace).
pub fn veth_pair(a: &Netns, a_if: &str, b: &Netns, b_if: &str) -> Veth {
    assert!(
        a_if.len() <= 15 && b_if.len() <= 15,
        "interface names are at most 15 bytes: {a_if}, {b_if}"
    );
    relay_bin::netns::veth_pair(&a.inner, a_if, &b.inner, b_if).unwrap_or_else(|e| panic!("{e}"))
}
