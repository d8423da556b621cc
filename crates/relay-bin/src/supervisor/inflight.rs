//! What is in flight between the supervisor and its workers: rule changes waiting for the
//! workers' confirmations, and a change of the worker set.

use super::inputs::NewRings;
use crate::control::proto::{ChangeReport, Response};
use std::collections::BTreeSet;
use std::sync::mpsc::Sender;
use std::time::Instant;

/// A change that was applied and is waiting for the workers' confirmations.
#[derive(Debug)]
pub(crate) struct PendingChange {
    /// The answer, once confirmed.
    pub(crate) report: ChangeReport,
    /// Where the answer goes (none: a reload by SIGHUP, or rules that stopped waiting).
    pub(crate) reply: Option<Sender<Response>>,
    /// When it is answered anyway, naming the workers that did not confirm.
    pub(crate) deadline: Instant,
}

/// A change of the worker set in progress.
#[derive(Debug)]
pub(crate) struct Resize {
    /// The class whose workers change (0: the default class).
    pub(crate) class: usize,
    /// The CPUs of the class's new worker set, for the log.
    pub(crate) cpus: Vec<u32>,
    /// The slot serving each of the class's members once the change is done.
    pub(crate) owners: Vec<usize>,
    /// Slots stopped by the change: their members change, or they join or leave.
    pub(crate) affected: BTreeSet<usize>,
    /// Slots that leave the worker set.
    pub(crate) leaving: BTreeSet<usize>,
    /// Rings of members added for the change, not yet given to a slot.
    pub(crate) parked: NewRings,
    /// Where the answer goes, once every new owner serves.
    pub(crate) reply: Option<Sender<Response>>,
    /// When it began.
    pub(crate) started: Instant,
    /// Whether the rings have moved (the stopped workers are gone and the new owners started).
    pub(crate) moved: bool,
}
