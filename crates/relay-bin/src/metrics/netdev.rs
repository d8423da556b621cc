//! The kernel's counters of the interfaces the rules name, from `/proc/net/dev`: what reached an
//! input and left an output, to set against what the workers counted.
//!
//! `/proc/net` shows the network namespace of the reading process (unlike `/sys`, which shows
//! the namespace of whoever mounted it), so these are always the relay's own interfaces.

use relay_rules::Rule;
use std::collections::BTreeSet;

/// The kernel's counters of one interface, from `/proc/net/dev`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterfaceCounters {
    /// Interface name.
    pub name: String,
    /// Bytes received.
    pub receive_bytes: u64,
    /// Packets received.
    pub receive_packets: u64,
    /// Received packets the kernel dropped.
    pub receive_dropped: u64,
    /// Bytes sent.
    pub transmit_bytes: u64,
    /// Packets sent.
    pub transmit_packets: u64,
    /// Packets the kernel dropped on the way out.
    pub transmit_dropped: u64,
}

/// The kernel's counters of every interface `rules` name, from this process's namespace;
/// empty when `/proc/net/dev` cannot be read.
pub fn read_interfaces(rules: &[Rule]) -> Vec<InterfaceCounters> {
    let names: BTreeSet<&str> = rules
        .iter()
        .flat_map(|rule| {
            std::iter::once(rule.input.interface.as_str())
                .chain(rule.outputs.iter().map(|output| output.interface.as_str()))
        })
        .collect();
    // /proc/net is the namespace of the reading process, unlike /sys.
    let text = std::fs::read_to_string("/proc/net/dev").unwrap_or_default();
    parse_net_dev(&text)
        .into_iter()
        .filter(|counters| names.contains(counters.name.as_str()))
        .collect()
}

/// Parses `/proc/net/dev`: two header lines, then `name: ` and 16 numbers (8 receive, 8
/// transmit). Lines that do not parse are skipped.
pub fn parse_net_dev(text: &str) -> Vec<InterfaceCounters> {
    text.lines()
        .filter_map(|line| {
            let (name, numbers) = line.split_once(':')?;
            let numbers: Vec<u64> = numbers
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            (numbers.len() >= 16).then(|| InterfaceCounters {
                name: name.trim().to_owned(),
                receive_bytes: numbers[0],
                receive_packets: numbers[1],
                receive_dropped: numbers[3],
                transmit_bytes: numbers[8],
                transmit_packets: numbers[9],
                transmit_dropped: numbers[11],
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_dev_parses() {
        let text = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0
  rin0: 1234567    1000    0    7    0     0          0       900     5000      40    0    3    0     0       0          0
broken: 1 2 3
";
        let parsed = parse_net_dev(text);
        assert_eq!(parsed.len(), 2);
        assert_eq!(
            parsed[1],
            InterfaceCounters {
                name: "rin0".into(),
                receive_bytes: 1_234_567,
                receive_packets: 1000,
                receive_dropped: 7,
                transmit_bytes: 5000,
                transmit_packets: 40,
                transmit_dropped: 3,
            }
        );
    }
}
