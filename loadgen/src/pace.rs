//! Sleeping precise to microseconds inside a monoio runtime, and open-loop send schedules.
//!
//! monoio's timers, like tokio's, sit on a wheel with 1 ms slots, so a pacer built on them sends
//! in bursts a millisecond apart and adds up to a millisecond to every latency it measures. On
//! io_uring, [`PreciseTimer`] instead arms a `timerfd` (an hrtimer, no slack) and reads it
//! through the ring: the task sleeps without spinning (a spinning generator competes with the
//! system under test for the CPU) and wakes within microseconds of the deadline. Under the epoll
//! driver a timerfd read would block the whole thread, so there the timer falls back to monoio's
//! wheel and says so.
//!
//! [`Schedule`] yields the intended send times of an open-loop run: evenly spaced, or Poisson
//! arrivals (exponential gaps) from a seeded generator so runs are repeatable.

use std::io;
use std::time::{Duration, Instant};

use rustix::time::{
    Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec, timerfd_create,
    timerfd_settime,
};

/// A sleep precise to microseconds; see the module docs.
#[derive(Debug)]
pub struct PreciseTimer {
    /// The timerfd read through io_uring, or `None` under the epoll driver.
    timerfd: Option<monoio::fs::File>,
    /// A second descriptor of the same timerfd, to arm it (monoio's file gives no `AsFd`).
    control: Option<std::os::fd::OwnedFd>,
    /// The 8-byte expiry counter each read fills (kept to avoid an allocation per sleep).
    counter: Option<Vec<u8>>,
}

impl PreciseTimer {
    /// A timer for the current runtime: a timerfd when `io_uring` is true, monoio's
    /// millisecond wheel otherwise. Sets the calling thread's timer slack to 1 ns.
    ///
    /// # Errors
    /// When the timerfd cannot be created.
    pub fn new(io_uring: bool) -> io::Result<Self> {
        if !io_uring {
            return Ok(Self {
                timerfd: None,
                control: None,
                counter: None,
            });
        }
        // The kernel lets a thread's timers fire up to its "timer slack" late (50 µs by
        // default) to batch wake-ups; a pacer wants the opposite. Measured here: p50 lateness
        // 25 µs with the default slack, 16 µs with 1 ns (the VM's own wake-up floor).
        let _ = rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(1));
        let fd = timerfd_create(TimerfdClockId::Monotonic, TimerfdFlags::CLOEXEC)?;
        let control = fd.try_clone()?;
        let file = monoio::fs::File::from_std(std::fs::File::from(fd))?;
        Ok(Self {
            timerfd: Some(file),
            control: Some(control),
            counter: Some(vec![0; 8]),
        })
    }

    /// Whether sleeps are precise (timerfd) rather than rounded to monoio's 1 ms wheel.
    pub fn is_precise(&self) -> bool {
        self.timerfd.is_some()
    }

    /// Sleeps until `deadline` (returns at once if it has passed).
    ///
    /// # Errors
    /// When arming or reading the timerfd fails.
    pub async fn sleep_until(&mut self, deadline: Instant) -> io::Result<()> {
        let now = Instant::now();
        if deadline <= now {
            return Ok(());
        }
        let (Some(file), Some(control)) = (&self.timerfd, &self.control) else {
            monoio::time::sleep_until(deadline.into()).await;
            return Ok(());
        };
        let wait = deadline - now;
        let spec = Itimerspec {
            it_interval: Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: Timespec {
                tv_sec: i64::try_from(wait.as_secs()).unwrap_or(i64::MAX),
                tv_nsec: i64::from(wait.subsec_nanos()),
            },
        };
        timerfd_settime(control, TimerfdTimerFlags::empty(), &spec)?;
        let buf = self.counter.take().unwrap_or_else(|| vec![0; 8]);
        // Offset -1: a timerfd has no file position; io_uring reads it like read(2). The read
        // is never dropped half-way (this future is awaited to the end), so nothing is lost.
        let (result, buf) = file.read_at(buf, u64::MAX).await;
        self.counter = Some(buf);
        result.map(|_| ())
    }

    /// Sleeps for `duration`.
    ///
    /// # Errors
    /// As [`sleep_until`](Self::sleep_until).
    pub async fn sleep(&mut self, duration: Duration) -> io::Result<()> {
        self.sleep_until(Instant::now() + duration).await
    }
}

/// How intended send times are spaced in an open-loop run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Exactly `1 / rate` apart.
    Uniform,
    /// Exponentially distributed gaps with mean `1 / rate` (a Poisson process), which is how
    /// independent senders' messages arrive at an interface engine.
    Poisson,
}

/// The intended send times of one open-loop stream: `start`, then gaps per [`Arrival`].
#[derive(Debug, Clone)]
pub struct Schedule {
    next: Instant,
    /// Nanoseconds between sends (the mean, for Poisson).
    gap_ns: f64,
    /// Fractional nanoseconds carried so that rounding never drifts the rate.
    carry_ns: f64,
    arrival: Arrival,
    rng: mllp::rand::XorShift,
}

impl Schedule {
    /// A schedule of `rate` sends per second beginning at `start`. `seed` makes Poisson gaps
    /// repeatable (any value).
    ///
    /// # Panics
    /// When `rate` is not a positive finite number (the command line checks it first).
    pub fn new(start: Instant, rate: f64, arrival: Arrival, seed: u64) -> Self {
        assert!(rate.is_finite() && rate > 0.0, "rate must be positive");
        Self {
            next: start,
            gap_ns: 1e9 / rate,
            carry_ns: 0.0,
            arrival,
            rng: mllp::rand::XorShift::new(seed),
        }
    }

    /// The next intended send time (not consumed).
    pub fn peek(&self) -> Instant {
        self.next
    }

    /// Consumes and returns the next intended send time.
    pub fn advance(&mut self) -> Instant {
        let current = self.next;
        let gap = match self.arrival {
            Arrival::Uniform => self.gap_ns,
            Arrival::Poisson => {
                // Inverse-CDF sampling of the exponential distribution from a uniform in (0, 1].
                -(1.0 - self.rng.unit()).ln() * self.gap_ns
            }
        } + self.carry_ns;
        let whole = gap.floor();
        self.carry_ns = gap - whole;
        // A gap beyond u64 nanoseconds (585 years) cannot come from a valid rate.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let whole_ns = whole as u64;
        self.next = current + Duration::from_nanos(whole_ns);
        current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_schedule_keeps_the_rate_without_drift() {
        let start = Instant::now();
        // 3 per µs is not a whole number of ns per gap: the carry must keep the total exact.
        let mut schedule = Schedule::new(start, 3_000_000.0, Arrival::Uniform, 1);
        let first = schedule.advance();
        assert_eq!(first, start);
        for _ in 1..3_000_000 {
            schedule.advance();
        }
        let elapsed = schedule.peek() - start;
        let error = elapsed.as_nanos().abs_diff(1_000_000_000);
        assert!(error <= 1, "3M sends at 3M/s span 1 s, got {elapsed:?}");
    }

    #[test]
    fn poisson_schedule_has_the_requested_mean_and_is_repeatable() {
        let start = Instant::now();
        let mut a = Schedule::new(start, 10_000.0, Arrival::Poisson, 42);
        let mut b = Schedule::new(start, 10_000.0, Arrival::Poisson, 42);
        let n = 200_000;
        let mut gaps_over_3_means = 0;
        let mut last = a.advance();
        b.advance();
        for _ in 1..n {
            let t = a.advance();
            assert_eq!(t, b.advance(), "same seed, same schedule");
            if t - last > Duration::from_micros(300) {
                gaps_over_3_means += 1;
            }
            last = t;
        }
        let mean_us = (a.peek() - start).as_secs_f64() * 1e6 / f64::from(n);
        assert!((mean_us - 100.0).abs() < 2.0, "mean gap {mean_us} µs");
        // P(gap > 3 × mean) = e^-3 ≈ 4.98 % for an exponential distribution.
        let share = f64::from(gaps_over_3_means) / f64::from(n);
        assert!((share - 0.0498).abs() < 0.005, "tail share {share}");
    }

    #[test]
    fn precise_timer_sleeps_until_the_deadline() {
        let uring = monoio::utils::detect_uring();
        let driver = if uring {
            netio::runtime::Driver::IoUring
        } else {
            netio::runtime::Driver::Epoll
        };
        netio::runtime::block_on(driver, async move {
            let mut timer = PreciseTimer::new(uring).unwrap();
            assert_eq!(timer.is_precise(), uring);
            for micros in [0u64, 50, 300, 1_500] {
                let deadline = Instant::now() + Duration::from_micros(micros);
                timer.sleep_until(deadline).await.unwrap();
                // Never early; how late is a matter for benchmarks, not tests.
                assert!(Instant::now() >= deadline);
            }
        })
        .unwrap();
    }
}
