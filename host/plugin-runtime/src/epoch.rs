//! The epoch ticker: wasmtime's CPU deadline for guest code is counted in
//! epochs, so one thread advances the engine's epoch at a fixed rate.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::Engine;

/// One epoch tick: the precision of the CPU limit.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Advances the engine's epoch every [`EPOCH_TICK`]; a call's CPU deadline is
/// counted in these ticks.
pub(crate) struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub(crate) fn start(engine: Engine) -> EpochTicker {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("hookhost-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .expect("spawning the epoch thread");
        EpochTicker {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// CPU a call may still burn after its deadline passed before it is
/// stopped: a call that is really computing spends it within a tick or two.
const OVERRUN_CPU: Duration = EPOCH_TICK;

/// A call's deadline counts wall-clock ticks, which a busy machine also
/// spends on other threads: a 5 µs call descheduled at the wrong moment
/// would pass a 10 ms deadline without computing. So when the deadline
/// passes, the call is given one tick more at a time and stopped only once
/// it has used [`OVERRUN_CPU`] of its thread's CPU since: a spinning guest
/// stops within a tick or two of its limit, a merely waiting one does not.
/// Reading the thread's CPU clock is a system call (~0.4 µs here), so it is
/// read only after the deadline, never on an ordinary call.
#[derive(Debug, Default)]
pub(crate) struct Overrun {
    cpu_at_deadline: Option<Duration>,
}

impl Overrun {
    /// A new call starts: its deadline has not passed.
    pub(crate) fn reset(&mut self) {
        self.cpu_at_deadline = None;
    }

    /// The deadline passed: stop the call, or give it more ticks.
    pub(crate) fn on_deadline(&mut self) -> wasmtime::Result<wasmtime::UpdateDeadline> {
        let now = thread_cpu_time();
        match self.cpu_at_deadline {
            None => {
                self.cpu_at_deadline = Some(now);
                Ok(wasmtime::UpdateDeadline::Continue(1))
            }
            Some(at) if now.saturating_sub(at) >= OVERRUN_CPU => {
                Ok(wasmtime::UpdateDeadline::Interrupt)
            }
            Some(_) => Ok(wasmtime::UpdateDeadline::Continue(1)),
        }
    }
}

/// CPU time the calling thread has used.
#[cfg(unix)]
fn thread_cpu_time() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for the call to fill.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    if rc != 0 {
        // Without a CPU clock, count wall time: the plain deadline.
        return wall_time();
    }
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

#[cfg(not(unix))]
fn thread_cpu_time() -> Duration {
    wall_time()
}

fn wall_time() -> Duration {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spin(cpu: Duration) {
        let start = thread_cpu_time();
        while thread_cpu_time() - start < cpu {
            std::hint::black_box(0u64);
        }
    }

    #[test]
    fn a_call_that_keeps_computing_after_its_deadline_is_stopped() {
        let mut overrun = Overrun::default();
        assert!(matches!(
            overrun.on_deadline(),
            Ok(wasmtime::UpdateDeadline::Continue(1))
        ));
        spin(OVERRUN_CPU);
        assert!(matches!(
            overrun.on_deadline(),
            Ok(wasmtime::UpdateDeadline::Interrupt)
        ));
    }

    #[test]
    fn a_call_that_only_waited_gets_more_time() {
        let mut overrun = Overrun::default();
        assert!(matches!(
            overrun.on_deadline(),
            Ok(wasmtime::UpdateDeadline::Continue(1))
        ));
        // Sleeping uses no CPU: however long it lasts, the call goes on.
        std::thread::sleep(Duration::from_millis(20));
        assert!(matches!(
            overrun.on_deadline(),
            Ok(wasmtime::UpdateDeadline::Continue(1))
        ));
        overrun.reset();
        spin(OVERRUN_CPU);
        assert!(
            matches!(
                overrun.on_deadline(),
                Ok(wasmtime::UpdateDeadline::Continue(1))
            ),
            "reset: a new call"
        );
    }
}
