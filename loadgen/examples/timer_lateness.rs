//! How late does the open-loop pacer wake up on this machine? Compares `PreciseTimer` (timerfd
//! through io_uring) with monoio's millisecond timer wheel, 100 µs sleeps.
//!
//! `cargo run --release -p loadgen --example timer_lateness`

use std::time::{Duration, Instant};

fn percentiles(mut late: Vec<u128>) -> String {
    late.sort_unstable();
    let at = |per_mille: usize| late[(late.len() - 1) * per_mille / 1_000];
    format!(
        "p50 {} ns, p99 {} ns, max {} ns",
        at(500),
        at(990),
        at(1_000)
    )
}

fn main() {
    netio::runtime::block_on(netio::runtime::Driver::IoUring, async {
        let mut timer = loadgen::pace::PreciseTimer::new(true).expect("timerfd");
        let mut late = Vec::new();
        for _ in 0..2_000 {
            let deadline = Instant::now() + Duration::from_micros(100);
            timer.sleep_until(deadline).await.expect("sleep");
            late.push((Instant::now() - deadline).as_nanos());
        }
        println!("PreciseTimer (timerfd): {}", percentiles(late));
        let mut late = Vec::new();
        for _ in 0..500 {
            let deadline = Instant::now() + Duration::from_micros(100);
            monoio::time::sleep_until(deadline.into()).await;
            late.push((Instant::now() - deadline).as_nanos());
        }
        println!("monoio timer wheel:     {}", percentiles(late));
    })
    .expect("io_uring runtime");
}
