//! Property tests over the `mllp` core, one binary with a module per topic (one link step).
//!
//! Case counts come from `PROPTEST_CASES` (default modest, for a 2-core CI); shrunk failures
//! are saved beside each module as `*.proptest-regressions`, committed, and replayed first.

mod ack;
mod batch;
mod charset;
mod corpus;
mod escape;
mod frame;
mod header;
mod scan;
mod view;
