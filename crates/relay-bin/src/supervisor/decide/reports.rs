//! What a worker's report of its table (a confirmation, or the generation and checksum its
//! counters carry) calls for.

/// What a report calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TableVerdict {
    /// It serves the current generation with the expected table.
    Confirmed,
    /// It serves the current generation, but its table differs from the expected one: send it
    /// the whole table (a drift repair).
    Drifted,
    /// It serves an older generation and nothing sent since brings it to the current one (it
    /// started, or missed an update, before the latest change): send it the whole table.
    Behind,
    /// Nothing to do: an update or a resync is on its way to it.
    InFlight,
}

/// A worker's table as it reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TableReport {
    /// The generation its table has.
    pub(crate) generation: u64,
    /// The checksum of its table.
    pub(crate) checksum: u64,
}

/// What the worker's state as the supervisor sees it adds to a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sent {
    /// Whether it serves (it confirmed a table since it started).
    pub(crate) serving: bool,
    /// Whether a whole table is already on its way to it.
    pub(crate) resyncing: bool,
    /// The latest generation sent to it.
    pub(crate) generation: u64,
}

/// The verdict on `report`, when the running rules are at `generation` and the table this
/// worker must hold has `expected` as its checksum.
pub(crate) fn judge_table(
    generation: u64,
    expected: u64,
    report: TableReport,
    sent: Sent,
) -> TableVerdict {
    if report.generation == generation {
        if report.checksum == expected {
            TableVerdict::Confirmed
        } else {
            TableVerdict::Drifted
        }
    } else if report.generation < generation
        && sent.serving
        && !sent.resyncing
        && sent.generation < generation
    {
        TableVerdict::Behind
    } else {
        // A report that crossed an update on its way is not a reason: the update is in
        // flight. A starting worker is sent its whole table when it says it is ready.
        TableVerdict::InFlight
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVING_AT_5: Sent = Sent {
        serving: true,
        resyncing: false,
        generation: 5,
    };

    fn report(generation: u64, checksum: u64) -> TableReport {
        TableReport {
            generation,
            checksum,
        }
    }

    #[test]
    fn the_current_table_is_confirmed_and_a_different_one_has_drifted() {
        assert_eq!(
            judge_table(5, 0xab, report(5, 0xab), SERVING_AT_5),
            TableVerdict::Confirmed
        );
        assert_eq!(
            judge_table(5, 0xab, report(5, 0xac), SERVING_AT_5),
            TableVerdict::Drifted
        );
        // Drift is judged even while a resync is on its way: the resync is of the same
        // generation, so the worker's answer to it is what settles it.
        let resyncing = Sent {
            resyncing: true,
            ..SERVING_AT_5
        };
        assert_eq!(
            judge_table(5, 0xab, report(5, 0xac), resyncing),
            TableVerdict::Drifted
        );
    }

    /// A change applied while a worker was restarting: the starting worker was sent the
    /// generation of its start (4), not the change (5), and says it is ready with 4.
    #[test]
    fn a_worker_that_started_before_a_change_is_brought_up_to_it() {
        let started_at_4 = Sent {
            serving: true,
            resyncing: false,
            generation: 4,
        };
        assert_eq!(
            judge_table(5, 0xab, report(4, 0x11), started_at_4),
            TableVerdict::Behind
        );
        // Once the resync is on its way, later reports of 4 are expected.
        let resyncing = Sent {
            resyncing: true,
            generation: 5,
            ..started_at_4
        };
        assert_eq!(
            judge_table(5, 0xab, report(4, 0x11), resyncing),
            TableVerdict::InFlight
        );
    }

    #[test]
    fn a_report_that_crossed_an_update_waits_for_it() {
        // Sent 5, reports 4: the update is in flight.
        assert_eq!(
            judge_table(5, 0xab, report(4, 0x11), SERVING_AT_5),
            TableVerdict::InFlight
        );
        // Not serving yet: it gets the whole table when it confirms its start.
        let starting = Sent {
            serving: false,
            resyncing: false,
            generation: 4,
        };
        assert_eq!(
            judge_table(5, 0xab, report(4, 0x11), starting),
            TableVerdict::InFlight
        );
    }
}
