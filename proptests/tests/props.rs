//! Property tests over the `mllp` core, one binary with a module per topic (one link step).
//!
//! Case counts come from `PROPTEST_CASES` (default modest, for a 2-core CI); shrunk failures
//! are saved beside each module as `*.proptest-regressions`, committed, and replayed first.

#[path = "props/ack.rs"]
mod ack;
#[path = "props/batch.rs"]
mod batch;
#[path = "props/corpus.rs"]
mod corpus;
#[path = "props/escape.rs"]
mod escape;
#[path = "props/frame.rs"]
mod frame;
#[path = "props/scan.rs"]
mod scan;
#[path = "props/view.rs"]
mod view;
