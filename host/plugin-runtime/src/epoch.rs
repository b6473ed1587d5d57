//! The epoch ticker: wasmtime's CPU deadline for guest code is counted in
//! epochs, so one thread advances the engine's epoch at a fixed rate while
//! guest code runs, and sleeps while none does (an idle node, or one with
//! no plugins, would otherwise wake a thousand times a second for nothing).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::Engine;

/// One epoch tick: the precision of the CPU limit.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Ticks without a call starting before the ticker sleeps: under steady
/// plugin traffic it keeps ticking instead of being woken per call.
const IDLE_TICKS_BEFORE_SLEEP: u32 = 100;

/// Advances the engine's epoch every [`EPOCH_TICK`] while a guest call is
/// under way (see [`EpochTicker::busy`]); a call's CPU deadline is counted
/// in these ticks.
pub(crate) struct EpochTicker {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    /// Guest calls under way.
    running: AtomicUsize,
    /// Guest calls started so far: the ticker sleeps only after a while
    /// without one.
    started: AtomicU64,
    /// The ticker waits on `wake` (or is about to).
    sleeping: AtomicBool,
    /// Epochs advanced so far.
    ticks: AtomicU64,
    stop: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        // Guards no data: a panic while it was held leaves nothing broken.
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until a call is under way or the ticker stops.
    fn sleep_while_idle(&self) {
        let mut guard = self.lock();
        // `sleeping` is set before `running` is read again, and a caller
        // raises `running` before it reads `sleeping`: one of the two sees
        // the other, so a call never starts unseen by a sleeping ticker.
        self.sleeping.store(true, Ordering::SeqCst);
        while self.running.load(Ordering::SeqCst) == 0 && !self.stop.load(Ordering::SeqCst) {
            guard = self.wake.wait(guard).unwrap_or_else(|p| p.into_inner());
        }
        self.sleeping.store(false, Ordering::SeqCst);
    }

    fn wake(&self) {
        let _guard = self.lock();
        self.wake.notify_one();
    }
}

/// A guest call under way: the ticker ticks until it is dropped.
pub(crate) struct Busy<'a>(&'a Shared);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

impl EpochTicker {
    pub(crate) fn start(engine: Engine) -> EpochTicker {
        let shared = Arc::new(Shared::default());
        let ticker = shared.clone();
        let thread = std::thread::Builder::new()
            .name("hookhost-epoch".into())
            .spawn(move || {
                let mut idle_ticks = 0;
                let mut last_started = 0;
                while !ticker.stop.load(Ordering::Relaxed) {
                    let started = ticker.started.load(Ordering::SeqCst);
                    if started != last_started || ticker.running.load(Ordering::SeqCst) > 0 {
                        (idle_ticks, last_started) = (0, started);
                    } else if idle_ticks >= IDLE_TICKS_BEFORE_SLEEP {
                        ticker.sleep_while_idle();
                        idle_ticks = 0;
                        continue;
                    } else {
                        idle_ticks += 1;
                    }
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                    ticker.ticks.fetch_add(1, Ordering::Relaxed);
                }
            })
            .expect("spawning the epoch thread");
        EpochTicker {
            shared,
            thread: Some(thread),
        }
    }

    /// Marks a guest call (instantiation included) as under way for as
    /// long as the guard lives, waking the ticker if it sleeps.
    pub(crate) fn busy(&self) -> Busy<'_> {
        let shared = &*self.shared;
        shared.started.fetch_add(1, Ordering::SeqCst);
        shared.running.fetch_add(1, Ordering::SeqCst);
        if shared.sleeping.load(Ordering::SeqCst) {
            shared.wake();
        }
        Busy(shared)
    }

    #[cfg(test)]
    fn sleeping(&self) -> bool {
        self.shared.sleeping.load(Ordering::SeqCst)
    }

    #[cfg(test)]
    fn ticks(&self) -> u64 {
        self.shared.ticks.load(Ordering::Relaxed)
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake();
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

    /// Polls until `done`; fails only after a minute, far longer than a
    /// loaded machine needs.
    fn wait_for(what: &str, done: impl Fn() -> bool) {
        let start = std::time::Instant::now();
        while !done() {
            assert!(start.elapsed() < Duration::from_secs(60), "never: {what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn the_ticker_ticks_only_while_a_call_is_under_way() {
        let ticker = EpochTicker::start(Engine::default());
        wait_for("asleep with no call", || ticker.sleeping());
        let before = ticker.ticks();
        std::thread::sleep(EPOCH_TICK * 20);
        assert_eq!(ticker.ticks(), before, "no tick while asleep");

        let call = ticker.busy();
        wait_for("ticking again", || ticker.ticks() > before + 2);
        // A call under way keeps it awake however long it lasts.
        std::thread::sleep(EPOCH_TICK * (IDLE_TICKS_BEFORE_SLEEP + 50));
        assert!(!ticker.sleeping(), "asleep during a call");
        drop(call);
        wait_for("asleep again after the call", || ticker.sleeping());
    }

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
