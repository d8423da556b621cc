//! The supervisor's decisions that need nothing but their inputs: pure functions over plain
//! values, each tested here, so `world` only gathers the inputs and carries the outcome out.
//!
//! - `members`: which worker slot serves which fanout member;
//! - `resize`: whether a change of the worker set may begin, and which workers it stops;
//! - `reports`: what a worker's report of its table calls for (confirmed, drifted, behind);
//! - `autoscale`: when the default class grows or shrinks.
//!
//! The CPU choice itself (`relay.cpus`, `ctl workers set`) is `crate::cpus`.

pub(crate) mod autoscale;
pub(crate) mod members;
pub(crate) mod reports;
pub(crate) mod resize;
