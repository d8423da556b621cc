//! `[relay] consume_input`: the frames a rule relays are dropped at their input interface's
//! ingress hook, after the relay's receive rings (packet sockets bound to `ETH_P_ALL`, which the
//! kernel serves before that hook) took them, so the host's IP stack does not route, checksum
//! and drop copies that no socket reads.
//!
//! [`Consume`] keeps one filter per input interface (see [`crate::ingress`]) in step with the
//! running rules: the keys (destination, port) of the any-source rules on each interface, with
//! how many rules have each, so that a change touches only the interfaces whose keys it
//! changed. It follows a change before the change is answered, removes its filters when the
//! relay stops, and at start removes the ones a run that did not stop cleanly left behind.
//!
//! It fails open: a filter that cannot be installed or updated is removed (or, if even that
//! fails, the error is logged at error level), so a frame is never dropped for a key no rule
//! relays any more; the host's stack then merely does the work it did without the setting.
//! A source-specific rule's key is not consumed: datagrams from other sources to it may be
//! wanted by the host. Nor is a VLAN rule's: the program drops only untagged frames (a tagged
//! one belongs to a VLAN interface the relay may not own), and the rule's untagged twin, if
//! any, is another rule.

use crate::control::proto::ConsumeFilter;
use crate::ingress::{Tc, TcError};
use relay_rules::RuleSet;
use relay_rules::bpf::consume_program;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

type Key = (IpAddr, u16);

/// The ingress filters of the input interfaces.
#[derive(Debug)]
pub(super) struct Consume {
    /// The netlink socket; none when the setting is off or the socket could not be opened.
    tc: Option<Tc>,
    keys: ConsumedKeys,
    /// By interface, what is on its ingress hook.
    filters: BTreeMap<String, Filter>,
}

/// The keys of the consumed rules per interface, with how many rules have each, so that a
/// change costs in proportion to its own rules.
#[derive(Debug, Default)]
struct ConsumedKeys {
    /// The interface and key of each consumed rule, by name.
    rules: HashMap<String, (String, Key)>,
    /// By interface, the keys with how many rules have each.
    counts: BTreeMap<String, BTreeMap<Key, u32>>,
}

impl ConsumedKeys {
    /// Counts rule `name`'s key on `interface`.
    fn add(&mut self, name: &str, interface: &str, key: Key) {
        *self
            .counts
            .entry(interface.to_owned())
            .or_default()
            .entry(key)
            .or_insert(0) += 1;
        self.rules
            .insert(name.to_owned(), (interface.to_owned(), key));
    }

    /// Takes rule `name`'s key back; returns its interface, if the rule was counted.
    fn remove(&mut self, name: &str) -> Option<String> {
        let (interface, key) = self.rules.remove(name)?;
        if let Some(keys) = self.counts.get_mut(&interface) {
            match keys.get_mut(&key) {
                Some(count) if *count > 1 => *count -= 1,
                Some(_) => {
                    keys.remove(&key);
                }
                None => {}
            }
            if keys.is_empty() {
                self.counts.remove(&interface);
            }
        }
        Some(interface)
    }

    /// The distinct keys on `interface`, in order.
    fn of(&self, interface: &str) -> Vec<Key> {
        self.counts
            .get(interface)
            .map(|keys| keys.keys().copied().collect())
            .unwrap_or_default()
    }
}

/// The relay's filter on one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Filter {
    ifindex: u32,
    /// Whether the relay added the interface's `clsact` qdisc (and so removes it at the end,
    /// when no other filter uses it).
    added_qdisc: bool,
    /// Keys the installed program drops; none when it is not installed.
    installed: Option<usize>,
    /// Why it is not installed.
    problem: Option<String>,
}

impl Consume {
    /// Removes the filters a previous run left behind and, if `enabled`, gets ready to install
    /// new ones. Without `CAP_NET_ADMIN` (or any netlink socket) the relay runs without them,
    /// and says so.
    pub(super) fn start(enabled: bool) -> Self {
        let mut tc = match Tc::open() {
            Ok(tc) => Some(tc),
            Err(error) => {
                log::warn!("consume_input: {error}; relayed input is not consumed");
                None
            }
        };
        if let Some(socket) = &mut tc {
            match socket.sweep() {
                Ok(left) if !left.is_empty() => log::warn!(
                    "removed the ingress filter(s) a previous run left on interface index(es) \
                     {left:?}"
                ),
                Ok(_) => {}
                Err(error) if error.errno() == Some(libc::EPERM) && !enabled => {}
                Err(error) => {
                    log::warn!("looking for ingress filters a previous run left behind: {error}")
                }
            }
        }
        Consume {
            tc: if enabled { tc } else { None },
            keys: ConsumedKeys::default(),
            filters: BTreeMap::new(),
        }
    }

    /// Makes the filters follow a change that added `added` and removed `removed` (by name)
    /// from the running set, which is now `set`.
    pub(super) fn follow(
        &mut self,
        set: &RuleSet,
        added: &[relay_rules::Rule],
        removed: &[String],
    ) {
        if self.tc.is_none() {
            return;
        }
        let mut touched = BTreeSet::new();
        // Removed first: a rule changed in place is removed and added under one name.
        touched.extend(removed.iter().filter_map(|name| self.keys.remove(name)));
        for rule in added {
            if rule.input.source.is_some()
                || rule.input.vlan.is_some()
                || set.get(&rule.name).is_none()
            {
                continue;
            }
            let key = (rule.input.destination, rule.input.port);
            self.keys.add(&rule.name, &rule.input.interface, key);
            touched.insert(rule.input.interface.clone());
        }
        for interface in touched {
            let ifindex = set.interfaces().get(&interface).map(|facts| facts.index);
            self.refilter(&interface, ifindex);
        }
    }

    /// Installs, replaces or removes `interface`'s filter to match its keys now; `ifindex` is
    /// its index, none when the running set has no facts for it.
    fn refilter(&mut self, interface: &str, ifindex: Option<u32>) {
        let Some(tc) = self.tc.as_mut() else {
            return;
        };
        let keys = self.keys.of(interface);
        // The old filter goes when the interface went (its index with it) or has no keys left.
        if let Some(old) = self.filters.get(interface).cloned()
            && (keys.is_empty() || ifindex != Some(old.ifindex))
        {
            remove(tc, interface, &old);
            self.filters.remove(interface);
        }
        let Some(ifindex) = ifindex.filter(|_| !keys.is_empty()) else {
            return;
        };
        let filter = self.filters.entry(interface.to_owned()).or_insert(Filter {
            ifindex,
            added_qdisc: false,
            installed: None,
            problem: None,
        });
        let installed = install(tc, filter, &keys);
        match installed {
            Ok(()) => {
                if filter.problem.take().is_some() {
                    log::info!("{interface}: relayed input is consumed again");
                }
                filter.installed = Some(keys.len());
            }
            Err(problem) => {
                // Fail open: a filter that cannot follow the keys must not drop any longer.
                if filter.installed.take().is_some()
                    && let Err(error) = tc.remove_filter(ifindex)
                {
                    log::error!(
                        "{interface}: the ingress filter could not be updated nor removed, so \
                         it drops the keys it had: {error}"
                    );
                }
                if filter.problem.as_deref() != Some(problem.as_str()) {
                    log::warn!("{interface}: relayed input is not consumed: {problem}");
                }
                filter.problem = Some(problem);
            }
        }
    }

    /// Removes every filter the relay installed (and the qdiscs it added that nothing else
    /// uses).
    pub(super) fn close(&mut self) {
        let Some(tc) = self.tc.as_mut() else {
            return;
        };
        for (interface, filter) in std::mem::take(&mut self.filters) {
            remove(tc, &interface, &filter);
        }
        self.tc = None;
    }

    /// What is on each input interface's ingress hook, for `ctl workers` and the metrics.
    pub(super) fn report(&self) -> Vec<ConsumeFilter> {
        self.filters
            .iter()
            .map(|(interface, filter)| ConsumeFilter {
                interface: interface.clone(),
                ifindex: filter.ifindex,
                keys: filter.installed.unwrap_or(0),
                installed: filter.installed.is_some(),
                problem: filter.problem.clone(),
            })
            .collect()
    }
}

impl Drop for Consume {
    fn drop(&mut self) {
        self.close();
    }
}

/// Puts the program for `keys` on `filter`'s interface, adding a `clsact` qdisc if it has none.
fn install(tc: &mut Tc, filter: &mut Filter, keys: &[Key]) -> Result<(), String> {
    let program = consume_program(keys.iter().copied()).map_err(|error| error.to_string())?;
    if filter.installed.is_none() && !filter.added_qdisc {
        filter.added_qdisc = tc
            .add_clsact(filter.ifindex)
            .map_err(|error| error.to_string())?;
    }
    tc.replace_filter(filter.ifindex, &program)
        .map_err(|error| error.to_string())
}

/// Takes the relay's filter off `filter`'s interface, and the qdisc the relay added if no other
/// filter uses it. An interface that is gone took both with it.
fn remove(tc: &mut Tc, interface: &str, filter: &Filter) {
    let gone = |error: &TcError| error.errno() == Some(libc::ENODEV);
    if let Err(error) = tc.remove_filter(filter.ifindex) {
        log::error!("{interface}: removing the ingress filter: {error}");
        return;
    }
    if !filter.added_qdisc {
        return;
    }
    match tc.has_other_filters(filter.ifindex) {
        Ok(false) => match tc.remove_clsact(filter.ifindex) {
            Ok(()) => {}
            Err(error) if gone(&error) || error.errno() == Some(libc::ENOENT) => {}
            Err(error) => log::warn!("{interface}: removing the clsact qdisc: {error}"),
        },
        Ok(true) => {}
        Err(error) => log::warn!("{interface}: {error}; its clsact qdisc is left"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_counted_per_interface_and_rule() {
        let key = |port| (IpAddr::from(std::net::Ipv4Addr::new(239, 1, 1, 1)), port);
        let mut keys = ConsumedKeys::default();
        keys.add("a", "in0", key(5000));
        keys.add("b", "in0", key(5000));
        keys.add("c", "in0", key(5001));
        keys.add("d", "in1", key(5000));
        assert_eq!(keys.of("in0"), vec![key(5000), key(5001)]);
        assert_eq!(keys.of("in1"), vec![key(5000)]);
        assert_eq!(keys.remove("a").as_deref(), Some("in0"));
        assert_eq!(
            keys.of("in0"),
            vec![key(5000), key(5001)],
            "b still has 5000"
        );
        assert_eq!(keys.remove("b").as_deref(), Some("in0"));
        assert_eq!(keys.of("in0"), vec![key(5001)]);
        assert_eq!(keys.remove("b"), None, "removed once");
        assert_eq!(keys.remove("never"), None);
        // A rule changed in place: its old key goes, its new one comes.
        assert_eq!(keys.remove("c").as_deref(), Some("in0"));
        keys.add("c", "in0", key(5002));
        assert_eq!(keys.of("in0"), vec![key(5002)]);
        assert_eq!(keys.remove("d").as_deref(), Some("in1"));
        assert_eq!(keys.of("in1"), vec![]);
        assert!(
            !keys.counts.contains_key("in1"),
            "an interface without keys is forgotten"
        );
    }
}
