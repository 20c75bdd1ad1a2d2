//! A monoio runtime per thread: which driver (io_uring or epoll), pinning a thread to one of
//! the CPUs the process may use, and the file-descriptor limit many connections need.

use std::future::Future;
use std::io;
use std::thread::JoinHandle;

use tracing::{error, info, warn};

/// Which monoio driver a thread's runtime uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Driver {
    /// io_uring when the kernel offers it, else epoll (logged once).
    #[default]
    Auto,
    /// io_uring only; starting fails without it.
    IoUring,
    /// epoll only (for old kernels, or where io_uring is disabled by policy).
    Epoll,
}

/// The driver `wanted` resolves to on this machine: `Auto` becomes io_uring when the kernel
/// offers it and epoll otherwise (said once in the log); an explicit io_uring that is not there
/// is an error.
///
/// # Errors
/// When io_uring is asked for and the kernel does not offer it.
pub fn resolve_driver(wanted: Driver) -> io::Result<Driver> {
    let uring = monoio::utils::detect_uring();
    match wanted {
        Driver::Auto if uring => Ok(Driver::IoUring),
        Driver::Auto => {
            info!("io_uring is not available here: the epoll driver is used");
            Ok(Driver::Epoll)
        }
        Driver::IoUring if !uring => Err(io::Error::other(
            "io_uring was asked for but this kernel does not offer it",
        )),
        other => Ok(other),
    }
}

/// Runs `future` to completion on a new single-threaded monoio runtime (timers enabled) on
/// the calling thread, with the io_uring driver unless `driver` is `Epoll`.
///
/// # Errors
/// When the runtime cannot be built (for example, io_uring set-up refused).
pub fn block_on<F: Future>(driver: Driver, future: F) -> io::Result<F::Output> {
    match driver {
        Driver::Epoll => monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .map(|mut runtime| runtime.block_on(future)),
        Driver::Auto | Driver::IoUring => {
            // COOP_TASKRUN: completions are handed to this thread when it next enters the
            // kernel instead of interrupting it with an IPI; SINGLE_ISSUER: only this thread
            // submits (true of a thread-per-core runtime), which lets the kernel skip locking.
            // Both need Linux 6.0; older kernels get the default ring.
            let mut tuned = io_uring::IoUring::builder();
            tuned.setup_coop_taskrun().setup_single_issuer();
            let runtime = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                .uring_builder(tuned)
                .enable_timer()
                .build()
                .or_else(|_| {
                    monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                        .enable_timer()
                        .build()
                });
            runtime.map(|mut runtime| runtime.block_on(future))
        }
    }
}

/// Starts a thread called `name` that runs, on a runtime of its own, the future `task` makes
/// there, pinned to `cpu` when one is given. The future is made on the new thread because a
/// monoio task is not `Send`. A runtime that cannot be built (io_uring refused, say) or a pin
/// that fails is logged with the thread's name; the thread's result says whether it ran.
///
/// # Errors
/// When the thread cannot be started.
pub fn spawn_runtime<F, T>(
    name: String,
    driver: Driver,
    cpu: Option<usize>,
    task: impl FnOnce() -> F + Send + 'static,
) -> io::Result<JoinHandle<io::Result<T>>>
where
    F: Future<Output = T> + 'static,
    T: Send + 'static,
{
    std::thread::Builder::new().name(name).spawn(move || {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or_default();
        if let Some(cpu) = cpu
            && let Err(error) = pin_current_thread(cpu)
        {
            warn!(thread = name, cpu, %error, "could not pin the thread to a core");
        }
        let ran = block_on(driver, async move { task().await });
        if let Err(error) = &ran {
            error!(thread = name, %error, "cannot build the I/O runtime: this thread does nothing");
        }
        ran
    })
}

/// The CPUs this process may run on, in ascending order: its affinity mask as `taskset` or a
/// container's cpuset left it (read from the calling thread, which has not been pinned yet).
/// Empty when the mask cannot be read.
pub fn allowed_cpus() -> Vec<usize> {
    use rustix::thread::{CpuSet, sched_getaffinity};
    match sched_getaffinity(None) {
        Ok(set) => (0..CpuSet::MAX_CPU)
            .filter(|&cpu| set.is_set(cpu))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The CPU thread `id` is pinned to: the `id`-th of the `allowed` CPUs, wrapping around when
/// there are more threads than CPUs; `None` when no CPU is known (no pinning).
pub fn cpu_for_worker(id: usize, allowed: &[usize]) -> Option<usize> {
    if allowed.is_empty() {
        return None;
    }
    Some(allowed[id % allowed.len()])
}

/// Pins the calling thread to `cpu`.
///
/// # Errors
/// When `cpu` is beyond the affinity mask or the kernel refuses.
fn pin_current_thread(cpu: usize) -> io::Result<()> {
    use rustix::thread::{CpuSet, sched_setaffinity};
    if cpu >= CpuSet::MAX_CPU {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "CPU {cpu} is beyond the affinity mask's {} CPUs",
                CpuSet::MAX_CPU
            ),
        ));
    }
    let mut set = CpuSet::new();
    set.set(cpu);
    sched_setaffinity(None, &set).map_err(io::Error::from)
}

/// Lifts the soft limit on open file descriptors to the hard limit, so that many connections
/// do not run out of descriptors at the usual soft default of 1024. Returns the soft limit in
/// force afterwards (`None`: unlimited).
///
/// # Errors
/// When the kernel refuses the new limit (the old one stays).
pub fn raise_fd_limit() -> io::Result<Option<u64>> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        setrlimit(Resource::Nofile, limit).map_err(io::Error::from)?;
    }
    Ok(limit.current)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_take_the_allowed_cpus_in_order_and_wrap_around() {
        // `taskset -c 1`: every worker on CPU 1, never CPU 0.
        assert_eq!(cpu_for_worker(0, &[1]), Some(1));
        assert_eq!(cpu_for_worker(3, &[1]), Some(1));
        // A cpuset of 2, 5 and 7.
        let allowed = [2, 5, 7];
        let cpus: Vec<Option<usize>> = (0..7).map(|id| cpu_for_worker(id, &allowed)).collect();
        assert_eq!(
            cpus,
            [
                Some(2),
                Some(5),
                Some(7),
                Some(2),
                Some(5),
                Some(7),
                Some(2)
            ]
        );
        // Unknown affinity: no pinning.
        assert_eq!(cpu_for_worker(0, &[]), None);
    }

    #[test]
    fn the_allowed_cpus_are_this_process_s_affinity() {
        let allowed = allowed_cpus();
        assert!(!allowed.is_empty());
        assert!(allowed.windows(2).all(|w| w[0] < w[1]), "{allowed:?}");
        let parallelism = std::thread::available_parallelism().map_or(1, usize::from);
        // available_parallelism also honours cgroup CPU quotas, so it may be lower.
        assert!(parallelism <= allowed.len(), "{parallelism} > {allowed:?}");
    }

    #[test]
    fn the_fd_limit_is_raised_to_the_hard_limit() {
        use rustix::process::{Resource, getrlimit};
        let soft = raise_fd_limit().unwrap();
        let limit = getrlimit(Resource::Nofile);
        assert_eq!(soft, limit.current);
        assert!(limit.current == limit.maximum || limit.maximum.is_none());
    }

    #[test]
    fn a_runtime_thread_runs_what_it_makes_and_has_its_name() {
        let handle = spawn_runtime("netio-test".into(), Driver::Auto, None, || async {
            std::thread::current().name().map(str::to_owned)
        })
        .unwrap();
        assert_eq!(
            handle.join().unwrap().unwrap().as_deref(),
            Some("netio-test")
        );
    }

    #[test]
    fn both_drivers_run_a_future() {
        for driver in [Driver::Epoll, resolve_driver(Driver::Auto).unwrap()] {
            assert_eq!(block_on(driver, async { 7 }).unwrap(), 7);
        }
    }
}
