//! Coarse timers, the way nginx keeps its own: deadlines rounded up to a tick of
//! [`TICK`], kept per thread (one per worker runtime) in a map of ticks to the timers due
//! then, and one ticker task per wheel that sleeps until the earliest tick that has a
//! timer, fires what is due and sleeps again. Arming, moving later and cancelling a
//! deadline are a lock of the wheel's own (uncontended: one worker thread uses it) and a
//! vector push or swap-remove: no registration with tokio's timer, no system call, and no
//! allocation once the wheel's vectors have grown. Moving a deadline later touches only
//! the timer (the ticker re-files it when its old tick comes), so a timer reset on every
//! request costs the ticker one wake-up per timeout, not one per request.
//!
//! A timer fires no earlier than its deadline and at most one tick (plus the runtime's own
//! scheduling) after it. Cancelled timers leave nothing behind: dropping one takes it off
//! the wheel.
//!
//! [`Timer`] is hyper's timer (the HTTP/1 header read timeout, HTTP/2 keep-alive pings);
//! [`sleep`] and [`timeout`] serve the guard's own timeouts.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::Instant;

/// The wheel's resolution: a timer fires within one tick after its deadline.
pub(crate) const TICK: Duration = Duration::from_millis(20);

/// The ticker's sleep when no timer is armed (it is woken as soon as one is).
const PARKED: Duration = Duration::from_secs(3600);

thread_local! {
    static WHEEL: Arc<Wheel> = Wheel::new();
}

thread_local! {
    /// This thread's last reading of [`now`].
    static RECENT: std::cell::Cell<Option<std::time::Instant>> = const { std::cell::Cell::new(None) };
}

/// The time now, kept as this thread's [`recent`] time. Each request reads it once as it
/// begins.
pub(crate) fn now() -> std::time::Instant {
    let now = std::time::Instant::now();
    RECENT.set(Some(now));
    now
}

/// This thread's last reading of [`now`] (read now if there is none): no later than the
/// present, and no earlier than the start of the last request on this thread. Without a
/// clock reading of its own, for what may err towards "longer ago" (a pooled connection's
/// idle time, measured between two such readings, comes out longer, not shorter).
pub(crate) fn recent() -> std::time::Instant {
    RECENT.get().unwrap_or_else(now)
}

/// One thread's wheel.
pub(crate) struct Wheel {
    origin: Instant,
    /// The last tick the ticker reached: a timer due by then is ready at once.
    reached: AtomicU64,
    /// Whether a ticker task runs for this wheel (it is started on first need, and again
    /// if the runtime that ran it has gone).
    ticking: AtomicBool,
    state: Mutex<State>,
}

/// Slots of the ring: a timer due within `SLOTS` ticks (20 s) is visited once, at its
/// tick; one due later is visited once per turn of the ring and filed on.
const SLOTS: usize = 1024;
const MASK: u64 = SLOTS as u64 - 1;

struct State {
    /// Per slot of the ring, the keys of the timers filed under a tick that maps to it.
    ring: Box<[Vec<u32>]>,
    /// Which slots of the ring hold a timer, one bit each.
    occupied: Box<[u64]>,
    /// Timers filed on the ring.
    filed: usize,
    /// The last tick the ticker went through: a timer is filed under a later one.
    last: u64,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// The tick the ticker sleeps until (`u64::MAX`: none).
    armed: u64,
    /// The ticker must look again: a timer due before `armed` was filed.
    kicked: bool,
    ticker: Option<Waker>,
}

#[derive(Default)]
struct Slot {
    /// The tick the timer is due at.
    deadline: u64,
    /// Where it is filed: the tick its ring slot stands for, and its index there.
    filed: Option<(u64, usize)>,
    fired: bool,
    waker: Option<Waker>,
}

impl State {
    fn new() -> State {
        State {
            ring: (0..SLOTS).map(|_| Vec::new()).collect(),
            occupied: vec![0; SLOTS / 64].into_boxed_slice(),
            filed: 0,
            last: 0,
            slots: Vec::new(),
            free: Vec::new(),
            armed: u64::MAX,
            kicked: false,
            ticker: None,
        }
    }

    /// File timer `key` under `tick` (or the next tick the ticker goes through); the
    /// ticker's waker when it must wake earlier than it would.
    fn file(&mut self, key: u32, tick: u64) -> Option<Waker> {
        let tick = tick.max(self.last + 1);
        let at = (tick & MASK) as usize;
        let bucket = &mut self.ring[at];
        bucket.push(key);
        self.slots[key as usize].filed = Some((tick, bucket.len() - 1));
        self.occupied[at / 64] |= 1 << (at % 64);
        self.filed += 1;
        if tick < self.armed {
            self.armed = tick;
            self.kicked = true;
            return self.ticker.take();
        }
        None
    }

    fn unfile(&mut self, key: u32) {
        let Some((tick, index)) = self.slots[key as usize].filed.take() else {
            return;
        };
        let at = (tick & MASK) as usize;
        let bucket = &mut self.ring[at];
        bucket.swap_remove(index);
        if let Some(&moved) = bucket.get(index)
            && let Some((_, moved_index)) = &mut self.slots[moved as usize].filed
        {
            *moved_index = index;
        }
        if bucket.is_empty() {
            self.occupied[at / 64] &= !(1 << (at % 64));
        }
        self.filed -= 1;
    }

    fn insert(&mut self, deadline: u64, waker: Waker) -> u32 {
        let slot = Slot {
            deadline,
            filed: None,
            fired: false,
            waker: Some(waker),
        };
        match self.free.pop() {
            Some(key) => {
                self.slots[key as usize] = slot;
                key
            }
            None => {
                self.slots.push(slot);
                u32::try_from(self.slots.len() - 1).expect("fewer than 2^32 timers")
            }
        }
    }

    /// Take timer `key` off the wheel; its waker, to be dropped once the lock is let go
    /// (dropping a waker may drop a task, and with it timers of this wheel).
    fn remove(&mut self, key: u32) -> Option<Waker> {
        self.unfile(key);
        let waker = std::mem::take(&mut self.slots[key as usize]).waker;
        self.free.push(key);
        waker
    }

    /// Go through the ticks up to `now`: fire every timer due by then, file on those
    /// whose deadline moved later (or lies beyond a turn of the ring), and set `armed` to
    /// the next tick whose slot holds a timer.
    fn expire(&mut self, now: u64, wake: &mut Vec<Waker>) {
        let first = (self.last + 1).max(now.saturating_sub(MASK));
        let mut later = Vec::new();
        for tick in first..=now {
            let at = (tick & MASK) as usize;
            if self.occupied[at / 64] & (1 << (at % 64)) == 0 {
                continue;
            }
            let mut bucket = std::mem::take(&mut self.ring[at]);
            bucket.retain(|&key| {
                let slot = &mut self.slots[key as usize];
                match slot.filed {
                    Some((filed, _)) if filed > now => true,
                    _ => {
                        slot.filed = None;
                        self.filed -= 1;
                        if slot.deadline <= now {
                            slot.fired = true;
                            wake.extend(slot.waker.take());
                        } else {
                            later.push(key);
                        }
                        false
                    }
                }
            });
            for (index, &key) in bucket.iter().enumerate() {
                if let Some((_, filed_index)) = &mut self.slots[key as usize].filed {
                    *filed_index = index;
                }
            }
            if bucket.is_empty() {
                self.occupied[at / 64] &= !(1 << (at % 64));
            }
            self.ring[at] = bucket;
        }
        self.last = self.last.max(now);
        // Filed on by the ticker itself: no kick.
        self.armed = 0;
        for key in later {
            let deadline = self.slots[key as usize].deadline;
            self.file(key, deadline);
        }
        self.armed = self.next_occupied();
        self.kicked = false;
    }

    /// The first tick after `last` whose slot holds a timer (`u64::MAX`: none). A slot
    /// may hold only timers of a later turn: the ticker then looks in vain once a turn.
    fn next_occupied(&self) -> u64 {
        if self.filed == 0 {
            return u64::MAX;
        }
        let start = ((self.last + 1) & MASK) as usize;
        for step in 0..=SLOTS / 64 {
            let word = (start / 64 + step) % (SLOTS / 64);
            let mut bits = self.occupied[word];
            if step == 0 {
                bits &= !0 << (start % 64);
            }
            if bits != 0 {
                let at = word * 64 + bits.trailing_zeros() as usize;
                let ahead = (at + SLOTS - start) % SLOTS;
                return self.last + 1 + ahead as u64;
            }
        }
        u64::MAX
    }
}

impl Wheel {
    fn new() -> Arc<Wheel> {
        Arc::new(Wheel {
            origin: Instant::now(),
            reached: AtomicU64::new(0),
            ticking: AtomicBool::new(false),
            state: Mutex::new(State::new()),
        })
    }

    /// This thread's wheel.
    fn current() -> Arc<Wheel> {
        WHEEL.with(Arc::clone)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The first tick at or after `at`.
    fn tick_of(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.origin);
        let tick = TICK.as_nanos();
        u64::try_from(since.as_nanos().div_ceil(tick)).unwrap_or(u64::MAX)
    }

    /// The last tick at or before `at`.
    fn ticks_passed(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.origin);
        u64::try_from(since.as_nanos() / TICK.as_nanos()).unwrap_or(u64::MAX)
    }

    fn instant_of(&self, tick: u64) -> Instant {
        let nanos = u128::from(tick) * TICK.as_nanos();
        self.origin + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Start a ticker on the current runtime unless one runs.
    fn ensure_ticker(self: &Arc<Self>) {
        if self.ticking.load(Ordering::Relaxed) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if !self.ticking.swap(true, Ordering::AcqRel) {
            // The guard goes in now: a task dropped before its first poll (a runtime
            // shutting down) clears `ticking` too.
            runtime.spawn(ticker(Ticking(self.clone())));
        }
    }
}

/// Clears `ticking` when the ticker task ends (its runtime shut down), so that the next
/// timer starts another.
struct Ticking(Arc<Wheel>);

impl Drop for Ticking {
    fn drop(&mut self) {
        self.0.ticking.store(false, Ordering::Release);
        // The next ticker starts by looking at the wheel; until then nothing is armed.
        let mut state = self.0.state();
        let ticker = state.ticker.take();
        state.armed = u64::MAX;
        drop(state);
        drop(ticker);
    }
}

/// The wheel's ticker: sleeps until the next tick with a timer (or until kicked), fires
/// what is due.
async fn ticker(ticking: Ticking) {
    let wheel = &ticking.0;
    let sleep = tokio::time::sleep_until(Instant::now());
    tokio::pin!(sleep);
    let mut wake = Vec::new();
    loop {
        std::future::poll_fn(|cx| {
            if sleep.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            let mut state = wheel.state();
            if state.kicked {
                return Poll::Ready(());
            }
            if state
                .ticker
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
            {
                return Poll::Pending;
            }
            let old = state.ticker.replace(cx.waker().clone());
            drop(state);
            drop(old);
            Poll::Pending
        })
        .await;
        let now = Instant::now();
        let reached = wheel.ticks_passed(now);
        let armed = {
            let mut state = wheel.state();
            wheel.reached.store(reached, Ordering::Release);
            state.expire(reached, &mut wake);
            state.armed
        };
        for waker in wake.drain(..) {
            waker.wake();
        }
        let next = match armed {
            u64::MAX => now + PARKED,
            tick => wheel.instant_of(tick),
        };
        if sleep.deadline() != next {
            sleep.as_mut().reset(next);
        }
    }
}

/// A timer on the current thread's wheel; like `tokio::time::Sleep`, it can be reset.
pub(crate) struct Sleep {
    wheel: Arc<Wheel>,
    deadline: u64,
    key: Option<u32>,
    done: bool,
}

/// A timer that fires `duration` from now (within a tick after).
pub(crate) fn sleep(duration: Duration) -> Sleep {
    sleep_until(Instant::now() + duration)
}

/// A timer that fires at `deadline` (within a tick after).
pub(crate) fn sleep_until(deadline: Instant) -> Sleep {
    let wheel = Wheel::current();
    let deadline = wheel.tick_of(deadline);
    Sleep {
        wheel,
        deadline,
        key: None,
        done: false,
    }
}

impl Sleep {
    /// Fire at `deadline` instead, whether it fired already or not.
    pub(crate) fn reset(&mut self, deadline: Instant) {
        let tick = self.wheel.tick_of(deadline);
        self.deadline = tick;
        self.done = false;
        let Some(key) = self.key else {
            return;
        };
        let mut state = self.wheel.state();
        let slot = &mut state.slots[key as usize];
        slot.deadline = tick;
        slot.fired = false;
        match slot.filed {
            // Later (or the same): the ticker re-files it when its old tick comes.
            Some((filed, _)) if filed <= tick => {}
            _ => {
                state.unfile(key);
                let kick = state.file(key, tick);
                drop(state);
                if let Some(ticker) = kick {
                    ticker.wake();
                }
            }
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(());
        }
        let wheel = &this.wheel;
        match this.key {
            None => {
                if this.deadline <= wheel.reached.load(Ordering::Acquire) {
                    this.done = true;
                    return Poll::Ready(());
                }
                wheel.ensure_ticker();
                let mut state = wheel.state();
                let key = state.insert(this.deadline, cx.waker().clone());
                this.key = Some(key);
                let kick = state.file(key, this.deadline);
                drop(state);
                if let Some(ticker) = kick {
                    ticker.wake();
                }
                Poll::Pending
            }
            Some(key) => {
                let mut state = wheel.state();
                let slot = &mut state.slots[key as usize];
                if slot.fired {
                    let waker = state.remove(key);
                    drop(state);
                    drop(waker);
                    this.key = None;
                    this.done = true;
                    return Poll::Ready(());
                }
                if slot.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    return Poll::Pending;
                }
                let old = slot.waker.replace(cx.waker().clone());
                drop(state);
                drop(old);
                Poll::Pending
            }
        }
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let waker = self.wheel.state().remove(key);
            drop(waker);
        }
    }
}

/// `future`, or `Err(Elapsed)` when it has not finished by `duration` from now (within a
/// tick after).
pub(crate) fn timeout<F: Future>(duration: Duration, future: F) -> Timeout<F> {
    Timeout {
        future,
        timer: sleep(duration),
    }
}

pin_project_lite::pin_project! {
    /// The future of [`timeout`]: a plain future rather than an `async fn`, which would hold
    /// `future` twice (its argument, and the awaited copy) and copy it once more.
    pub(crate) struct Timeout<F> {
        #[pin]
        future: F,
        timer: Sleep,
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(output) = this.future.poll(cx) {
            return Poll::Ready(Ok(output));
        }
        Pin::new(this.timer).poll(cx).map(|()| Err(Elapsed))
    }
}

/// `future`, or `None` when `deadline` passes first. For one deadline over several awaits
/// (the upstream's connect, readiness and response under one `upstream_response`): each
/// await wraps only its own, small future, and no wrapper holds the whole sequence.
pub(crate) fn within<F: Future>(deadline: &mut Sleep, future: F) -> Within<'_, F> {
    Within { future, deadline }
}

pin_project_lite::pin_project! {
    /// The future of [`within`].
    pub(crate) struct Within<'d, F> {
        #[pin]
        future: F,
        deadline: &'d mut Sleep,
    }
}

impl<F: Future> Future for Within<'_, F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(output) = this.future.poll(cx) {
            return Poll::Ready(Some(output));
        }
        Pin::new(&mut **this.deadline).poll(cx).map(|()| None)
    }
}

/// A [`timeout`] that ran out.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Elapsed;

/// hyper's timer on the wheel of the thread that arms it.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Timer;

impl hyper::rt::Sleep for Sleep {}

impl hyper::rt::Timer for Timer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(sleep(duration))
    }

    fn sleep_until(&self, deadline: std::time::Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(sleep_until(Instant::from_std(deadline)))
    }

    fn now(&self) -> std::time::Instant {
        // tokio's clock, so that tests with paused time see one clock.
        Instant::now().into_std()
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, deadline: std::time::Instant) {
        match sleep.as_mut().downcast_mut_pin::<Sleep>() {
            Some(ours) => ours.get_mut().reset(Instant::from_std(deadline)),
            None => *sleep = self.sleep_until(deadline),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts its wake-ups.
    struct Count(AtomicUsize);

    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn live(wheel: &Wheel) -> (usize, usize) {
        let state = wheel.state();
        let filed = state.ring.iter().map(Vec::len).sum();
        assert_eq!(filed, state.filed);
        (filed, state.slots.len() - state.free.len())
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_fires_after_its_deadline_within_a_tick() {
        for millis in [1, 19, 20, 21, 1_000, 10_007, 81_920, 200_013] {
            let begun = Instant::now();
            sleep(Duration::from_millis(millis)).await;
            let took = Instant::now() - begun;
            assert!(
                took >= Duration::from_millis(millis),
                "{millis} ms: {took:?}"
            );
            assert!(
                took <= Duration::from_millis(millis) + TICK,
                "{millis} ms: {took:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_in_the_past_fires_at_once() {
        sleep(Duration::from_secs(1)).await;
        let begun = Instant::now();
        sleep_until(begun - Duration::from_millis(500)).await;
        sleep(Duration::ZERO).await;
        assert!(Instant::now() - begun <= TICK);
    }

    #[tokio::test(start_paused = true)]
    async fn timeout_passes_a_result_or_runs_out() {
        let quick = timeout(Duration::from_secs(1), async { 7 }).await;
        assert_eq!(quick, Ok(7));
        let begun = Instant::now();
        let slow = timeout(Duration::from_secs(1), std::future::pending::<()>()).await;
        assert_eq!(slow, Err(Elapsed));
        assert!(Instant::now() - begun >= Duration::from_secs(1));
        assert!(Instant::now() - begun <= Duration::from_secs(1) + TICK);
    }

    #[tokio::test(start_paused = true)]
    async fn reset_later_earlier_and_after_firing() {
        let begun = Instant::now();
        let mut timer = sleep(Duration::from_secs(1));
        let waker = Arc::new(Count(AtomicUsize::new(0)));
        let noticed = Waker::from(waker.clone());
        let mut cx = Context::from_waker(&noticed);
        assert!(Pin::new(&mut timer).poll(&mut cx).is_pending());
        // Later: not woken at the first deadline.
        timer.reset(begun + Duration::from_secs(5));
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(waker.0.load(Ordering::Relaxed), 0);
        assert!(Pin::new(&mut timer).poll(&mut cx).is_pending());
        // Earlier than where it is filed: fires at the new deadline.
        timer.reset(begun + Duration::from_secs(4));
        (&mut timer).await;
        let at = Instant::now() - begun;
        assert!(
            at >= Duration::from_secs(4) && at <= Duration::from_secs(4) + TICK,
            "{at:?}"
        );
        // Reset after firing: waits again.
        timer.reset(Instant::now() + Duration::from_secs(2));
        let again = Instant::now();
        (&mut timer).await;
        assert!(Instant::now() - again >= Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn dropped_timers_leave_nothing_on_the_wheel() {
        let wheel = Wheel::current();
        let mut cx = Context::from_waker(Waker::noop());
        let mut timers: Vec<Sleep> = (0..10_000u64)
            .map(|i| sleep(Duration::from_millis(1_000 + i)))
            .collect();
        for timer in &mut timers {
            assert!(Pin::new(timer).poll(&mut cx).is_pending());
        }
        assert_eq!(live(&wheel), (10_000, 10_000));
        // Cancel every other one; the rest fire.
        let kept: Vec<Sleep> = timers.into_iter().step_by(2).collect();
        assert_eq!(live(&wheel), (5_000, 5_000));
        for timer in kept {
            timer.await;
        }
        assert_eq!(live(&wheel), (0, 0));
        // The slots are reused, not grown.
        let slots = wheel.state().slots.len();
        for _ in 0..3 {
            let mut timer = sleep(Duration::from_secs(1));
            assert!(Pin::new(&mut timer).poll(&mut cx).is_pending());
        }
        assert_eq!(wheel.state().slots.len(), slots);
        assert_eq!(live(&wheel), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_later_earliest_timer_does_not_wake_the_ticker_early() {
        // A timer reset later on every "request" moves with no work for the ticker but one
        // re-filing when its old tick comes.
        let mut timer = sleep(Duration::from_secs(10));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(Pin::new(&mut timer).poll(&mut cx).is_pending());
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            timer.reset(Instant::now() + Duration::from_secs(10));
            assert!(Pin::new(&mut timer).poll(&mut cx).is_pending());
        }
        let reset = Instant::now();
        (&mut timer).await;
        let at = Instant::now() - reset;
        assert!(
            at >= Duration::from_secs(10) && at <= Duration::from_secs(10) + TICK,
            "{at:?}"
        );
    }

    #[test]
    fn a_new_runtime_gets_a_new_ticker() {
        for _ in 0..2 {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            runtime.block_on(async {
                let begun = Instant::now();
                sleep(Duration::from_secs(2)).await;
                assert!(Instant::now() - begun >= Duration::from_secs(2));
            });
        }
    }

    #[test]
    fn a_ticker_dropped_before_it_ran_is_started_again() {
        let paused = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap()
        };
        let first = paused();
        first.block_on(async {
            // Spawns the ticker, which this runtime never polls.
            let mut timer = sleep(Duration::from_secs(1));
            let mut cx = Context::from_waker(Waker::noop());
            assert!(Pin::new(&mut timer).poll(&mut cx).is_pending());
        });
        drop(first);
        paused().block_on(async {
            let fired =
                tokio::time::timeout(Duration::from_secs(10), sleep(Duration::from_secs(2)));
            assert!(fired.await.is_ok(), "no ticker ran the wheel");
        });
    }

    #[tokio::test(start_paused = true)]
    async fn hyper_resets_its_own_timer() {
        use hyper::rt::Timer as _;
        let timer = Timer;
        let begun = timer.now();
        let mut sleep = timer.sleep(Duration::from_secs(30));
        timer.reset(&mut sleep, begun + Duration::from_secs(1));
        assert!(sleep.as_mut().downcast_mut_pin::<Sleep>().is_some());
        sleep.await;
        let at = timer.now() - begun;
        assert!(
            at >= Duration::from_secs(1) && at <= Duration::from_secs(1) + TICK,
            "{at:?}"
        );
    }
}
