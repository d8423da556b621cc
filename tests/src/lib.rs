//! Support for the end-to-end tests: network namespaces and veth pairs that clean up after themselves.
