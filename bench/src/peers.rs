//! The peer relays `mllp-bench compare` runs side by side with `mllp-relay` (HAProxy, stunnel,
//! nginx stream): finding their binaries and writing a per-run configuration for each.
