//! Safe Linux AF_PACKET rings, fanout groups and the facts around them.
//!
//! (Crate documentation is completed with the crate.)

#![deny(unsafe_code)]
pub mod igmp;
pub mod udp_batch;
