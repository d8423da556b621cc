//! The configuration parser with its piece-by-piece reading, and check-config's validation of
//! what it reads, on arbitrary text.
//!
//! Neither may panic, and:
//! - the piece-by-piece reading gives exactly what the whole parse gives (the same
//!   configuration, or the same error), whatever the text;
//! - an accepted configuration re-serialises (`to_toml`, what `ctl save` writes) and parses
//!   back to the same configuration, and serialising that gives the same text;
//! - validation against a fixed set of interfaces (no host facts, so runs repeat) answers the
//!   same for the re-parsed rules, with the same rule-set checksum; an accepted set has unique
//!   rule names on known input interfaces, and stays accepted without its first rule;
//! - the class checks of check-config give the same answer for the re-parsed configuration.

#![no_main]

use libfuzzer_sys::fuzz_target;
use relay_bin::config::{self, ConfigFile};
use relay_bin::rings;
use relay_rules::{InterfaceFacts, Interfaces};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

fn interfaces() -> Interfaces {
    let mut set = Interfaces::new();
    let facts = [
        (
            "eth0",
            2,
            Some([2, 0, 0, 0, 0, 1]),
            1500,
            vec![Ipv4Addr::new(192, 0, 2, 1)],
        ),
        (
            "eth1",
            3,
            Some([2, 0, 0, 0, 0, 2]),
            9000,
            vec![Ipv4Addr::new(198, 51, 100, 1)],
        ),
        ("eth2", 4, Some([2, 0, 0, 0, 0, 3]), 1280, vec![]),
        ("tun0", 5, None, 1400, vec![Ipv4Addr::new(203, 0, 113, 1)]),
    ];
    for (name, index, mac, mtu, ipv4) in facts {
        set.insert(InterfaceFacts {
            name: name.into(),
            index,
            mac,
            mtu,
            ipv4,
        });
    }
    set
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let whole = ConfigFile::parse_by(text, false);
    let in_pieces = ConfigFile::parse_by(text, true);
    assert_eq!(in_pieces, whole, "piece by piece and whole agree");
    let Ok(config) = whole else {
        return;
    };

    let saved = config.to_toml();
    let again = match ConfigFile::parse(&saved) {
        Ok(again) => again,
        Err(error) => panic!("the saved form does not parse: {error}\n{saved}"),
    };
    assert_eq!(again, config, "saved and parsed back\n{saved}");
    assert_eq!(again.to_toml(), saved, "serialising is a fixed point");
    assert_eq!(ConfigFile::parse_by(&saved, true).as_ref(), Ok(&config));

    let facts = interfaces();
    let rules = config.to_rules();
    let checked = rings::validate(&rules, &facts);
    let rechecked = rings::validate(&again.to_rules(), &facts);
    match (&checked, &rechecked) {
        (Ok(set), Ok(reset)) => {
            assert_eq!(set.checksum(), reset.checksum());
            let names: BTreeSet<&str> = set.rules().iter().map(|r| r.name.as_str()).collect();
            assert_eq!(names.len(), set.len(), "unique rule names");
            for rule in set.rules() {
                assert!(facts.get(&rule.input.interface).is_some(), "{rule:?}");
            }
            if let Err(errors) = rings::validate(&rules[1.min(rules.len())..], &facts) {
                panic!("valid with its first rule, refused without: {errors:?}");
            }
        }
        (Err(errors), Err(again)) => {
            assert_eq!(errors, again);
            assert!(!errors.is_empty() && errors.iter().all(|e| !e.is_empty()));
        }
        _ => panic!("validation differs after a round trip: {checked:?} / {rechecked:?}"),
    }
    let names: Vec<String> = config.classes.iter().map(|c| c.name.clone()).collect();
    assert_eq!(
        config::check_classes(&config.classes),
        config::check_classes(&again.classes)
    );
    assert_eq!(
        config::check_rule_classes(&rules, &names, true),
        config::check_rule_classes(&again.to_rules(), &names, true)
    );
    assert_eq!(
        config::check_shared_keys(&rules),
        config::check_shared_keys(&again.to_rules())
    );
});
