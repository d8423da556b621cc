//! Runnable examples of `fanout-core` and `relay-rules`; see the `[[example]]` targets.
