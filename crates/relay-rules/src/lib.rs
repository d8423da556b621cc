//! Sans-IO logic of a UDP multicast relay.
//!
//! (Crate documentation is completed with the crate.)

#![forbid(unsafe_code)]
