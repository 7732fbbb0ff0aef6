//! Password hashing with bcrypt on a pool of its own: `password_hash_concurrency` OS threads
//! (by default one per core) at the lowest scheduling priority, fed by one bounded queue.
//!
//! The bound belongs to the work, not to the request: a job is a closure and a oneshot
//! sender, and a pool thread holds it until the hash is done. A client that hangs up (or a
//! request that times out) only drops its receiver: a job not yet started is then skipped,
//! a job already running finishes on its thread, so at most `password_hash_concurrency`
//! hashes ever run at once whatever clients do. The queue is bounded by the wait it implies
//! — jobs ahead, divided by the threads, times the measured CPU time of one hash, must stay
//! within `password_hash_max_wait` — and by a hard count (`password_hash_queue`) for
//! memory; past either, sign-up and login get a 503 at once instead of queueing without end.
//! The request timeout still bounds a wait that the task routes stretch by taking the CPU,
//! and a job whose request timed out is skipped.
//!
//! The pool threads run under Linux's `SCHED_IDLE` policy (and at nice 19, the fallback where
//! that is refused), so hashing takes every core the task routes leave idle and yields to
//! them the moment they need it. On Linux both are per thread.

use std::{
    collections::VecDeque,
    panic::{AssertUnwindSafe, catch_unwind},
    sync::{
        Arc, Condvar, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    time::Duration,
};

use tokio::sync::oneshot;

use super::domain::{PASSWORD_MAX_BYTES, Password};
use crate::{config::Settings, error::ApiError};

/// The nice value of the pool threads: the lowest priority `SCHED_OTHER` has.
const HASHING_NICE: i32 = 19;

/// A first guess at one bcrypt round-set on one core (cost 12 takes about 0.2 s on the
/// machines we measured), used until the first hash has been timed.
const SEED_TIME_PER_ROUND: Duration = Duration::from_micros(50);

/// The weight of the newest measurement in the moving average of one hash's time.
const MEASUREMENT_WEIGHT: f64 = 0.2;

/// How sign-up and login reach bcrypt. Cheap to clone; the pool stops when the last clone
/// is dropped.
#[derive(Clone)]
pub struct PasswordHasher {
    cost: u32,
    pool: Arc<Pool>,
    /// A bcrypt hash of the configured cost whose salt and digest are random bytes: no
    /// password matches it, and verifying against it costs exactly one bcrypt, like
    /// verifying against a real account's hash. A login that names no account is checked
    /// against it, so that an unknown user takes as long as a wrong password — from the
    /// very first login, and without computing anything at start-up.
    dummy_hash: Arc<str>,
}

impl PasswordHasher {
    /// Starts the pool's threads (`password_hash_concurrency` of them) and lowers their
    /// priority; a priority that cannot be lowered is logged once, never fatal. Computes no
    /// hash, so start-up does not wait for bcrypt.
    ///
    /// # Errors
    ///
    /// When the operating system refuses to start a thread.
    pub fn start(settings: &Settings) -> anyhow::Result<Self> {
        let cost = settings.bcrypt_cost;
        let threads = settings.password_hash_concurrency.max(1);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                running: 0,
                hash_time: seed_hash_time(cost),
                measured: false,
                closed: false,
            }),
            work_ready: Condvar::new(),
            threads,
            queue_limit: settings.password_hash_queue,
            max_wait: settings.password_hash_max_wait,
            completed: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
        });
        let pool = Arc::new(Pool {
            shared: shared.clone(),
        });
        let (priority_sender, priority_results) = mpsc::channel();
        for number in 0..threads {
            let shared = shared.clone();
            let priority_sender = priority_sender.clone();
            std::thread::Builder::new()
                .name(format!("password-hash-{number}"))
                .spawn(move || {
                    priority_sender.send(lower_priority()).ok();
                    drop(priority_sender);
                    work(&shared);
                })?;
        }
        drop(priority_sender);
        // Each thread reports at once, before it waits for work: this takes microseconds.
        let refusal = priority_results
            .iter()
            .find_map(Result::err)
            .map(|error| error.to_string());
        match refusal {
            Some(error) => tracing::warn!(
                %error,
                "could not lower the scheduling priority of the password hashing threads; \
                 a login flood competes with the task routes for CPU on equal terms"
            ),
            None => tracing::info!(
                threads,
                nice = HASHING_NICE,
                queue = settings.password_hash_queue,
                max_wait_seconds = settings.password_hash_max_wait.as_secs_f64(),
                "password hashing pool started"
            ),
        }
        Ok(Self {
            cost,
            pool,
            dummy_hash: unguessable_hash(cost).into(),
        })
    }

    /// A 503 at once when a hash asked for now would not be admitted, so that an
    /// overloaded sign-up or login is refused before it costs a database query.
    ///
    /// # Errors
    ///
    /// [`ApiError::Overloaded`] when the queue is at its count or its wait bound.
    pub fn ensure_capacity(&self) -> Result<(), ApiError> {
        let shared = &self.pool.shared;
        let mut state = shared.lock();
        shared.drop_abandoned(&mut state);
        if shared.admits(&state) {
            Ok(())
        } else {
            Err(ApiError::Overloaded)
        }
    }

    /// Hashes a new password at the configured cost.
    ///
    /// # Errors
    ///
    /// [`ApiError::Overloaded`] when the queue is full; [`ApiError::Internal`] if bcrypt
    /// fails.
    pub async fn hash(&self, password: &Password) -> Result<String, ApiError> {
        let password = password.expose().to_owned();
        let cost = self.cost;
        self.run(move || bcrypt::hash(password, cost)).await
    }

    /// `true` when `password` matches `hash`. A password over 72 bytes never matches: bcrypt
    /// would otherwise compare only its first 72 bytes.
    ///
    /// # Errors
    ///
    /// [`ApiError::Overloaded`] when the queue is full.
    pub async fn verify(&self, password: &str, hash: &str) -> Result<bool, ApiError> {
        if password.len() > PASSWORD_MAX_BYTES {
            return Ok(false);
        }
        let password = password.to_owned();
        let hash = hash.to_owned();
        self.run(move || Ok(bcrypt::verify(password, &hash).unwrap_or(false)))
            .await
    }

    /// Spends the time of a verification, for a login that names no account.
    ///
    /// # Errors
    ///
    /// [`ApiError::Overloaded`] when the queue is full.
    pub async fn verify_nothing(&self, password: &str) -> Result<(), ApiError> {
        self.verify(password, &self.dummy_hash).await.map(drop)
    }

    /// Jobs admitted and waiting for a pool thread (abandoned ones included until a thread
    /// or an admission clears them).
    pub fn queue_depth(&self) -> usize {
        self.pool.shared.lock().queue.len()
    }

    /// Hashes running right now: never more than `password_hash_concurrency`.
    pub fn running(&self) -> usize {
        self.pool.shared.lock().running
    }

    /// Hashes computed since start-up.
    pub fn completed(&self) -> u64 {
        self.pool.shared.completed.load(Ordering::Relaxed)
    }

    /// Jobs dropped unstarted since start-up because their request was gone.
    pub fn skipped(&self) -> u64 {
        self.pool.shared.skipped.load(Ordering::Relaxed)
    }

    /// The moving average of one hash's CPU time on a pool thread (the seed guessed from the
    /// cost until a hash has been timed).
    pub fn hash_time(&self) -> Duration {
        self.pool.shared.lock().hash_time
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, bcrypt::BcryptError> + Send + 'static,
    ) -> Result<T, ApiError> {
        self.pool
            .submit(work)?
            .await
            .map_err(|_| ApiError::internal(anyhow::anyhow!("a password hashing job failed")))?
            .map_err(ApiError::internal)
    }
}

/// The owner's handle: dropping it (with the last [`PasswordHasher`]) stops the threads.
struct Pool {
    shared: Arc<Shared>,
}

impl Pool {
    /// Queues `work` if the bounds admit it; the receiver yields its result. Dropping the
    /// receiver before a thread takes the job makes the thread skip it.
    fn submit<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<oneshot::Receiver<T>, ApiError> {
        let (reply, receiver) = oneshot::channel();
        let shared = &self.shared;
        let mut state = shared.lock();
        shared.drop_abandoned(&mut state);
        if !shared.admits(&state) {
            return Err(ApiError::Overloaded);
        }
        state.queue.push_back(Box::new(Pending {
            work: Some(work),
            answer: None,
            reply,
        }));
        drop(state);
        shared.work_ready.notify_one();
        Ok(receiver)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.work_ready.notify_all();
    }
}

struct Shared {
    state: Mutex<State>,
    work_ready: Condvar,
    threads: usize,
    queue_limit: usize,
    max_wait: Duration,
    completed: AtomicU64,
    skipped: AtomicU64,
}

struct State {
    queue: VecDeque<Box<dyn Job>>,
    running: usize,
    /// Moving average of one hash's CPU time on a pool thread.
    hash_time: Duration,
    measured: bool,
    closed: bool,
}

impl Shared {
    /// Jobs run outside the lock, so a panic cannot leave the state half-changed: a
    /// poisoned lock is still a consistent one.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether one more job may join those in flight now.
    fn admits(&self, state: &State) -> bool {
        admits(
            state.queue.len() + state.running,
            self.threads,
            self.queue_limit,
            state.hash_time,
            self.max_wait,
        )
    }

    /// Forgets queued jobs whose request is gone, so that they neither count as ahead of a
    /// new one nor cost a thread's attention.
    fn drop_abandoned(&self, state: &mut State) {
        let before = state.queue.len();
        state.queue.retain(|job| !job.abandoned());
        let dropped = before - state.queue.len();
        if dropped > 0 {
            self.skipped.fetch_add(dropped as u64, Ordering::Relaxed);
        }
    }
}

/// Whether a job may join `in_flight` others (running or waiting) on `threads` threads: at
/// once when a thread is idle; otherwise only within the count bound (`threads +
/// queue_limit` in flight) and when its expected completion — the rounds of hashes ahead of
/// it, plus its own, times one hash's time — is within `max_wait`.
fn admits(
    in_flight: usize,
    threads: usize,
    queue_limit: usize,
    hash_time: Duration,
    max_wait: Duration,
) -> bool {
    if in_flight < threads {
        return true;
    }
    if in_flight >= threads.saturating_add(queue_limit) {
        return false;
    }
    let rounds = u32::try_from(in_flight / threads + 1).unwrap_or(u32::MAX);
    hash_time.saturating_mul(rounds) <= max_wait
}

/// The guess of one hash's time before any has been measured: bcrypt does 2^cost rounds.
fn seed_hash_time(cost: u32) -> Duration {
    SEED_TIME_PER_ROUND.saturating_mul(1u32.checked_shl(cost).unwrap_or(u32::MAX))
}

/// A well-formed bcrypt hash (`$2b$`, the given cost) with a random salt and a random
/// digest: it takes no bcrypt work to make, and no password is known to match it.
fn unguessable_hash(cost: u32) -> String {
    use bcrypt_base64::Engine as _;
    let salt: [u8; 16] = rand::random();
    let digest: [u8; 23] = rand::random();
    format!(
        "$2b${cost:02}${}{}",
        bcrypt::BASE_64.encode(salt),
        bcrypt::BASE_64.encode(digest)
    )
}

/// One queued piece of work and where its answer goes.
trait Job: Send {
    /// `true` once the request waiting for the answer is gone.
    fn abandoned(&self) -> bool;
    /// Does the work (on a pool thread, outside the lock).
    fn compute(&mut self);
    /// Sends the answer, after the thread has counted itself idle again, so that a client
    /// that sees the answer never finds the pool still busy with it.
    fn deliver(self: Box<Self>);
}

struct Pending<F, T> {
    work: Option<F>,
    answer: Option<T>,
    reply: oneshot::Sender<T>,
}

impl<F: FnOnce() -> T + Send, T: Send> Job for Pending<F, T> {
    fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }

    fn compute(&mut self) {
        self.answer = self.work.take().map(|work| work());
    }

    fn deliver(self: Box<Self>) {
        if let Some(answer) = self.answer {
            self.reply.send(answer).ok();
        }
    }
}

/// A pool thread: takes the oldest job whose request is still there, runs it, times it.
fn work(shared: &Shared) {
    loop {
        let mut job = {
            let mut state = shared.lock();
            loop {
                if state.closed {
                    return;
                }
                match state.queue.pop_front() {
                    Some(job) if job.abandoned() => {
                        shared.skipped.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(job) => {
                        state.running += 1;
                        break job;
                    }
                    None => {
                        state = shared
                            .work_ready
                            .wait(state)
                            .unwrap_or_else(PoisonError::into_inner);
                    }
                }
            }
        };
        let started = thread_cpu_time();
        // A panic in bcrypt must not take a pool thread with it; its job's receiver then
        // sees a dropped sender and the request gets a 500.
        let finished = catch_unwind(AssertUnwindSafe(|| job.compute())).is_ok();
        let took = started.elapsed();
        {
            let mut state = shared.lock();
            state.running -= 1;
            if finished {
                state.hash_time = if state.measured {
                    state.hash_time.mul_f64(1.0 - MEASUREMENT_WEIGHT)
                        + took.mul_f64(MEASUREMENT_WEIGHT)
                } else {
                    took
                };
                state.measured = true;
            }
        }
        if finished {
            shared.completed.fetch_add(1, Ordering::Relaxed);
        }
        job.deliver();
    }
}

/// The CPU time the calling thread has used, to time one hash by the work it is rather than
/// by the wall clock: a wall-clock time grows whenever the task routes (or 503s answered at
/// normal priority to clients that retry at once) take the CPU from the low-priority pool,
/// which would shrink the admitted queue, refuse more, and so feed on itself.
struct ThreadCpuTime(Duration);

impl ThreadCpuTime {
    fn elapsed(&self) -> Duration {
        thread_cpu_time().0.saturating_sub(self.0)
    }
}

#[cfg(target_os = "linux")]
fn thread_cpu_time() -> ThreadCpuTime {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock_gettime` writes one `timespec` we own; this clock always exists on
    // Linux, and on the impossible failure the zero written above stands.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    ThreadCpuTime(Duration::new(
        u64::try_from(now.tv_sec).unwrap_or(0),
        u32::try_from(now.tv_nsec).unwrap_or(0),
    ))
}

/// Elsewhere, the wall clock since the process started stands in.
#[cfg(not(target_os = "linux"))]
fn thread_cpu_time() -> ThreadCpuTime {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    ThreadCpuTime(START.get_or_init(std::time::Instant::now).elapsed())
}

/// Lowers the calling thread (only it: on Linux priorities are per thread) to nice 19, then
/// to the `SCHED_IDLE` policy where the kernel allows it.
#[cfg(target_os = "linux")]
fn lower_priority() -> std::io::Result<()> {
    // SAFETY: `gettid` has no preconditions, and `setpriority` on the caller's own thread
    // id only changes that thread's nice value; neither touches memory we own.
    let result = unsafe {
        let thread = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, thread as libc::id_t, HASHING_NICE)
    };
    if result != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SCHED_IDLE (Linux, sched(7)): the thread runs only on a CPU no normal thread wants, and
    // a waking task route preempts it at once, where against a nice 19 thread it may wait out
    // the rest of that thread's time slice. Nice 19 stays as the fallback where the policy
    // is refused (a seccomp filter, a container without it).
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: as above; `sched_setscheduler` on the caller's own thread id changes only that
    // thread's policy, and reads `param`, which lives across the call.
    let result = unsafe { libc::sched_setscheduler(libc::gettid(), libc::SCHED_IDLE, &param) };
    if result != 0 {
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            "SCHED_IDLE refused for a password hashing thread; it keeps nice 19"
        );
    }
    Ok(())
}

/// Elsewhere `setpriority` would change the whole process, task routes included.
#[cfg(not(target_os = "linux"))]
fn lower_priority() -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "per-thread priorities are only set on Linux",
    ))
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn hasher(cost: u32, threads: usize) -> PasswordHasher {
        let mut settings = Settings::new("sqlite::memory:");
        settings.bcrypt_cost = cost;
        settings.password_hash_concurrency = threads;
        PasswordHasher::start(&settings).expect("the pool starts")
    }

    /// Polls `condition` every few milliseconds, for at most ten seconds.
    async fn eventually(what: &str, condition: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(Instant::now() < deadline, "{what} within 10 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[test]
    fn the_dummy_hash_is_a_bcrypt_hash_of_the_configured_cost_that_nothing_matches() {
        for cost in [4, 12, 31] {
            let hash = unguessable_hash(cost);
            let parts: bcrypt::HashParts = hash.parse().expect("a well-formed bcrypt hash");
            assert_eq!(parts.get_cost(), cost);
            assert_ne!(hash, unguessable_hash(cost), "salt and digest are random");
        }
        // Verifying computes a whole bcrypt (an `Err` would mean no work was done).
        assert!(matches!(
            bcrypt::verify("", &unguessable_hash(4)),
            Ok(false)
        ));
        assert!(matches!(
            bcrypt::verify("password", &unguessable_hash(4)),
            Ok(false)
        ));
    }

    #[tokio::test]
    async fn a_login_for_no_account_runs_exactly_one_hash_from_the_first_one() {
        let hasher = hasher(4, 1);
        assert_eq!(hasher.completed(), 0, "start-up hashes nothing");
        hasher.verify_nothing("whatever it is").await.unwrap();
        assert_eq!(hasher.completed(), 1);

        let stored = hasher
            .hash(&Password::parse("correct horse battery".into()).unwrap())
            .await
            .unwrap();
        assert!(
            hasher
                .verify("correct horse battery", &stored)
                .await
                .unwrap()
        );
        assert!(!hasher.verify("wrong", &stored).await.unwrap());
        assert_eq!(
            hasher.completed(),
            4,
            "one hash per call, known user or not"
        );
    }

    #[tokio::test]
    async fn a_job_whose_request_is_gone_is_skipped_and_a_running_one_finishes() {
        let hasher = hasher(10, 1);
        let running = hasher.pool.submit(|| bcrypt::hash("first", 10)).unwrap();
        eventually("the first job starts", || hasher.running() == 1).await;
        let abandoned = hasher.pool.submit(|| bcrypt::hash("second", 10)).unwrap();
        assert_eq!(hasher.queue_depth(), 1);
        drop(abandoned);
        drop(running);

        eventually("the pool goes idle", || {
            hasher.running() == 0 && hasher.queue_depth() == 0
        })
        .await;
        assert_eq!(hasher.completed(), 1, "the running hash finished");
        assert_eq!(hasher.skipped(), 1, "the waiting one never ran");
    }

    #[tokio::test]
    async fn no_more_hashes_run_at_once_than_the_pool_has_threads() {
        let hasher = hasher(8, 2);
        let jobs: Vec<_> = (0..8)
            .map(|n| {
                hasher
                    .pool
                    .submit(move || bcrypt::hash(n.to_string(), 8))
                    .unwrap()
            })
            .collect();
        let mut most = 0;
        while hasher.completed() < 8 {
            most = most.max(hasher.running());
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(most <= 2, "{most} ran at once");
        for job in jobs {
            assert!(job.await.unwrap().is_ok());
        }
    }

    #[tokio::test]
    async fn the_measured_hash_time_replaces_the_seed() {
        let hasher = hasher(4, 1);
        assert_eq!(hasher.hash_time(), seed_hash_time(4));
        hasher.verify_nothing("x").await.unwrap();
        assert_ne!(hasher.hash_time(), seed_hash_time(4));
    }

    #[test]
    fn admission_is_bounded_by_the_wait_it_implies_and_by_a_count() {
        let second = Duration::from_secs(1);
        let max_wait = Duration::from_secs(10);
        // (in flight, threads, queue limit, one hash, admitted?)
        for (in_flight, threads, queue_limit, hash_time, admitted) in [
            (0, 1, 0, second, true),
            // A thread is idle: admitted even when one hash alone is over the wait.
            (1, 2, 0, Duration::from_secs(60), true),
            (1, 1, 0, second, false),
            // 9 ahead on one thread: the tenth round ends at 10 s.
            (9, 1, 100, second, true),
            (10, 1, 100, second, false),
            // Two threads halve the rounds.
            (19, 2, 100, second, true),
            (20, 2, 100, second, false),
            // The count bound holds however fast hashes are.
            (99, 1, 100, Duration::from_millis(1), true),
            (101, 1, 100, Duration::from_millis(1), false),
        ] {
            assert_eq!(
                admits(in_flight, threads, queue_limit, hash_time, max_wait),
                admitted,
                "{in_flight} in flight on {threads} threads, queue {queue_limit}, hash {hash_time:?}"
            );
        }
    }

    #[test]
    fn the_seed_doubles_with_each_step_of_cost() {
        assert_eq!(seed_hash_time(13), seed_hash_time(12) * 2);
        assert!(seed_hash_time(31) > Duration::from_secs(3600));
    }
}
