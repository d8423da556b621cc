//! Measurements of fanout-relay's control plane, run against the built `fanout-relay` binary in
//! network namespaces (root needed):
//!
//! - [`stall`]: the longest pause of a worker's traffic while 10,000 rules are added one by
//!   one under a steady stream, against the same stream without changes;
//! - [`restart`]: the time from a worker's death (SIGKILL) to its replacement serving again,
//!   with 1, 10,000 and 100,000 rules, and whether the packets of the outage were lost or only
//!   delayed.
//!
//! Timing belongs here, not in the test suite: the figures depend on the machine and its load.
//! See `README.md` for the commands.

pub mod control;
pub mod restart;
pub mod stall;
pub mod stream;

/// The `[[rule]]` of extra rule `i`: 100 ports on each group, groups from 239.20.0.0.
pub fn extra_rule(i: u32, per_group: u32) -> relay_rules::Rule {
    let (input, output) = extra_addresses(i, per_group);
    relay_rules::Rule {
        name: format!("r{i}"),
        input: relay_rules::Input {
            interface: "rin0".into(),
            destination: *input.ip(),
            port: input.port(),
            source: None,
            vlan: None,
        },
        outputs: vec![relay_rules::Output {
            interface: "rout0".into(),
            destination: *output.ip(),
            port: output.port(),
            ttl: relay_rules::Output::DEFAULT_TTL,
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
}

/// Input and output of extra rule `i`, with `per_group` rules (ports) per group.
pub fn extra_addresses(i: u32, per_group: u32) -> (std::net::SocketAddrV4, std::net::SocketAddrV4) {
    let group = i / per_group;
    let port = 7000 + (i % per_group) as u16;
    let [_, high, a, b] = group.to_be_bytes();
    assert!(
        high == 0 && a < 80,
        "at most 20,480 groups: rule {i}, {per_group} per group"
    );
    (
        std::net::SocketAddrV4::new(std::net::Ipv4Addr::new(239, 20 + a, b, 1), port),
        std::net::SocketAddrV4::new(std::net::Ipv4Addr::new(239, 100 + a, b, 1), port),
    )
}

/// The TOML of extra rule `i`.
pub fn extra_rule_toml(i: u32, per_group: u32) -> String {
    let (input, output) = extra_addresses(i, per_group);
    fanout_relay_tests::ctl::rule(
        &format!("r{i}"),
        &input.ip().to_string(),
        input.port(),
        &output.ip().to_string(),
        output.port(),
    )
}

/// Percentile `p` (0..=100) of `values` (sorted here), 0 for none.
pub fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let index = ((values.len() - 1) as f64 * p / 100.0).round() as usize;
    values[index]
}
