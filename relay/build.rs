//! Records the git commit the relay is built from (`MLLP_GIT_COMMIT`, shown by `--version` and
//! `mllp_relay_build_info`), or `unknown` outside a git checkout (a crate tarball, a package
//! built from one). Uncommitted changes are not marked: this script reruns when HEAD moves,
//! not on every edit, so it could not tell reliably.

use std::process::Command;

fn main() {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=MLLP_GIT_COMMIT={commit}");
    // Rebuild when HEAD moves: a commit, a checkout.
    if let Some(git_dir) = git(&["rev-parse", "--git-dir"]) {
        println!("cargo:rerun-if-changed={git_dir}/HEAD");
        if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={git_dir}/{reference}");
        }
    }
}
