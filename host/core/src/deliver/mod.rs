//! Delivery: sends each job to its subscription's endpoint with hyper's
//! pooled client, under the subscription's retry policy, recording every
//! attempt in the store.
//!
//! Policy (defaults from the bike-parking seed, configurable per
//! subscription): 5 s per attempt; up to 3 retries on 5xx, connection errors
//! and timeouts; 100 ms between retries (or exponential with jitter); other
//! statuses (4xx, 3xx) are never retried; any 2xx is success. A job out of
//! retries, or refused, goes to the dead letters; [`Deliverer::resend`]
//! brings it back. The next attempt time is stored, so retries survive restarts.

use crate::clock::now_ms;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::Config;
use crate::metrics::METRICS;
use crate::model::{Attempt, Job, JobStatus};
use crate::model::{Backoff, Subscription};
use crate::sign;
use crate::ssrf::{GuardedResolver, TargetPolicy};
use crate::store::{Store, StoreError};
use crate::subscriptions::Subscriptions;
use std::sync::atomic::Ordering;

type HttpsClient =
    Client<hyper_rustls::HttpsConnector<HttpConnector<GuardedResolver>>, Full<Bytes>>;

/// A subscription as delivery needs it.
struct Endpoint {
    sub: Arc<Subscription>,
    uri: Uri,
    keys: Vec<Vec<u8>>,
    in_flight: Semaphore,
    /// Shared by every subscription on the same scheme, host and port.
    host_in_flight: Arc<Semaphore>,
}

impl Endpoint {
    fn new(
        sub: Arc<Subscription>,
        policy: &TargetPolicy,
        host_in_flight: impl FnOnce(&Uri) -> Arc<Semaphore>,
    ) -> Result<Endpoint, String> {
        let uri: Uri = sub.url.parse().map_err(|e| format!("url: {e}"))?;
        // Again here: the allowlist may have changed since the subscription
        // was made, and IP literals never reach the resolver's check.
        policy.check_url(&uri).map_err(|e| format!("url: {e}"))?;
        Ok(Endpoint {
            keys: sub
                .secrets
                .iter()
                .map(|s| sign::whsec_key(s).map_err(|e| e.to_string()))
                .collect::<Result<_, _>>()?,
            in_flight: Semaphore::new(sub.max_in_flight),
            host_in_flight: host_in_flight(&uri),
            uri,
            sub,
        })
    }
}

pub struct Deliverer {
    client: HttpsClient,
    store: Arc<dyn Store>,
    subscriptions: Arc<Subscriptions>,
    policy: Arc<TargetPolicy>,
    /// Built on first use per subscription version: a changed subscription
    /// gets a new endpoint (attempts in flight finish on the old one).
    endpoints: std::sync::Mutex<HashMap<String, Arc<Endpoint>>>,
    /// In-flight limits per `scheme://host:port`.
    hosts: std::sync::Mutex<HashMap<String, Arc<Semaphore>>>,
    per_host: usize,
    tasks: TaskTracker,
    stop: CancellationToken,
    states: StateWriter,
    /// Jobs with a task; at most `max_live`. The others wait in the store
    /// and are loaded as room frees up.
    live: JobsInMemory,
    max_live: usize,
    /// Some pending jobs are only in the store.
    overflow: std::sync::atomic::AtomicBool,
}

/// Records job states on its own thread, in order, many per store batch:
/// delivery tasks never wait on the store (whose writes can stall for
/// 100 ms and more) and never block the async threads.
struct StateWriter {
    to_thread: std::sync::mpsc::Sender<StateWrite>,
}

enum StateWrite {
    Save(Job),
    /// A job's task ended: once its last state is stored, it may be loaded
    /// again from the store (by a refill).
    Release(String),
    /// Answered once every earlier write is applied.
    Sync(tokio::sync::oneshot::Sender<()>),
}

/// Ids of jobs that have a task (in memory).
type JobsInMemory = Arc<std::sync::Mutex<HashSet<String>>>;

fn lock(live: &JobsInMemory) -> std::sync::MutexGuard<'_, HashSet<String>> {
    live.lock().unwrap_or_else(|p| p.into_inner())
}

/// Most job states per store batch.
const STATE_BATCH: usize = 1024;

impl StateWriter {
    fn start(store: Arc<dyn Store>, live: JobsInMemory) -> StateWriter {
        let (to_thread, writes) = std::sync::mpsc::channel::<StateWrite>();
        let spawned = std::thread::Builder::new()
            .name("job-states".into())
            .spawn(move || {
                while let Ok(first) = writes.recv() {
                    let mut jobs = Vec::new();
                    let mut released = Vec::new();
                    let mut synced = Vec::new();
                    let mut next = Some(first);
                    while let Some(write) = next {
                        match write {
                            StateWrite::Save(job) => jobs.push(job),
                            StateWrite::Release(id) => released.push(id),
                            StateWrite::Sync(done) => synced.push(done),
                        }
                        next = if jobs.len() < STATE_BATCH {
                            writes.try_recv().ok()
                        } else {
                            None
                        };
                    }
                    if !jobs.is_empty()
                        && let Err(e) = store.update_jobs(&jobs)
                    {
                        tracing::error!(error = %e, jobs = jobs.len(), "cannot record delivery states");
                    }
                    // After the states they follow: a refill never loads a
                    // job whose final state is still on its way.
                    if !released.is_empty() {
                        let mut live = lock(&live);
                        for id in &released {
                            live.remove(id);
                        }
                    }
                    for done in synced {
                        let _ = done.send(());
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the job-state writer");
        }
        StateWriter { to_thread }
    }

    fn save(&self, job: Job) {
        if self.to_thread.send(StateWrite::Save(job)).is_err() {
            tracing::error!("the job-state writer stopped; a delivery state is not recorded");
        }
    }

    fn release(&self, job_id: String) {
        let _ = self.to_thread.send(StateWrite::Release(job_id));
    }

    /// Returns once every state saved before the call is in the store.
    async fn sync(&self) {
        let (done, applied) = tokio::sync::oneshot::channel();
        if self.to_thread.send(StateWrite::Sync(done)).is_ok() {
            let _ = applied.await;
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ResendError {
    #[error("no delivery with id {0}")]
    NotFound(String),
    #[error("delivery {0} is {1:?}; only dead or delivered ones can be re-sent")]
    NotResendable(String, JobStatus),
    #[error("delivery {0} is for subscription {1}, which is no longer configured")]
    NoSubscription(String, String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How one attempt ended.
enum Outcome {
    Delivered,
    Retry,
    Refused,
}

impl Deliverer {
    pub fn new(
        store: Arc<dyn Store>,
        config: &Config,
        subscriptions: Arc<Subscriptions>,
    ) -> Arc<Deliverer> {
        // Host names are checked at every resolve (IP literals were checked
        // with the config): see `ssrf`.
        let policy = config
            .delivery
            .target_policy()
            .expect("validated with the config");
        let policy = Arc::new(policy);
        let mut http = HttpConnector::new_with_resolver(GuardedResolver::new(policy.clone()));
        http.enforce_http(false); // the HTTPS wrapper checks the scheme
        // Without it a request written in two segments can wait for the
        // peer's delayed ACK.
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(config.delivery.max_in_flight_per_host)
            .build(https);
        let live = JobsInMemory::default();
        Arc::new(Deliverer {
            client,
            subscriptions,
            policy,
            endpoints: Default::default(),
            hosts: Default::default(),
            per_host: config.delivery.max_in_flight_per_host,
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
            states: StateWriter::start(store.clone(), live.clone()),
            live,
            max_live: config.delivery.max_jobs_in_memory,
            overflow: Default::default(),
            store,
        })
    }

    /// The endpoint of the current version of subscription `id`.
    fn endpoint(&self, id: &str) -> Option<Arc<Endpoint>> {
        let sub = self.subscriptions.get(id)?;
        let mut endpoints = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = endpoints.get(id)
            && Arc::ptr_eq(&e.sub, &sub)
        {
            return Some(e.clone());
        }
        let host_in_flight = |uri: &Uri| {
            let host = format!(
                "{}://{}",
                uri.scheme_str().unwrap_or("http"),
                uri.authority().map_or("", |a| a.as_str())
            );
            let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
            hosts
                .entry(host)
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_host)))
                .clone()
        };
        match Endpoint::new(sub, &self.policy, host_in_flight) {
            Ok(e) => {
                let e = Arc::new(e);
                endpoints.insert(id.to_string(), e.clone());
                Some(e)
            }
            Err(error) => {
                tracing::error!(subscription = %id, %error, "subscription unusable");
                None
            }
        }
    }

    /// Starts delivering a pending job (at its `next_attempt_at_ms`), or,
    /// when `max_jobs_in_memory` jobs have tasks already, leaves it to wait
    /// in the store (where it is pending) for a refill.
    pub fn submit(self: &Arc<Self>, job: Job) {
        {
            let mut live = lock(&self.live);
            if live.len() >= self.max_live || live.contains(&job.id) {
                // A job with a task still (a re-send of it) is loaded again
                // once that task's state is stored.
                self.overflow.store(true, Ordering::SeqCst);
                return;
            }
            live.insert(job.id.clone());
        }
        let Some(endpoint) = self.endpoint(&job.subscription_id) else {
            tracing::warn!(job_id = %job.id, subscription = %job.subscription_id, "subscription no longer configured; job left pending");
            lock(&self.live).remove(&job.id);
            return;
        };
        let this = self.clone();
        let span = tracing::info_span!("delivery", job_id = %job.id, event_id = %job.event_id, subscription = %job.subscription_id);
        self.tasks.spawn(
            async move {
                let id = job.id.clone();
                this.clone().run(endpoint, job).await;
                this.states.release(id);
            }
            .instrument(span),
        );
    }

    /// Loads the store's pending jobs (all of them, up to the memory bound;
    /// the rest as room frees up): at start, and when submits overflowed.
    pub fn resume(self: &Arc<Self>) {
        self.overflow.store(true, Ordering::SeqCst);
        let this = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_millis(100));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = this.stop.cancelled() => return,
                    _ = ticker.tick() => {}
                }
                let room = this.max_live.saturating_sub(lock(&this.live).len());
                // Refill in chunks, not one job at a time.
                if !this.overflow.load(Ordering::SeqCst) || room < (this.max_live / 4).max(1) {
                    continue;
                }
                this.overflow.store(false, Ordering::SeqCst);
                let (store, live) = (this.store.clone(), this.live.clone());
                let subscriptions = this.subscriptions.clone();
                let loaded = tokio::task::spawn_blocking(move || {
                    // Jobs of a removed subscription stay pending, unloaded,
                    // until it is back.
                    store.pending_jobs_except(room, &|id| lock(&live).contains(id), &|job| {
                        subscriptions.get(&job.subscription_id).is_some()
                    })
                })
                .await;
                match loaded {
                    Ok(Ok((jobs, more))) => {
                        if more {
                            this.overflow.store(true, Ordering::SeqCst);
                        }
                        for job in jobs {
                            this.submit(job);
                        }
                    }
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "cannot load pending deliveries; retried");
                        this.overflow.store(true, Ordering::SeqCst);
                    }
                    Err(_) => this.overflow.store(true, Ordering::SeqCst),
                }
            }
        });
    }

    /// Puts a dead letter (or a delivered job, to send it again) back in
    /// the queue for a new round of attempts, under the same id.
    pub fn resend(self: &Arc<Self>, job_id: &str) -> Result<Job, ResendError> {
        let mut job = self
            .store
            .job(job_id)?
            .ok_or_else(|| ResendError::NotFound(job_id.to_string()))?;
        if !matches!(job.status, JobStatus::Dead | JobStatus::Delivered) {
            return Err(ResendError::NotResendable(job.id, job.status));
        }
        if self.subscriptions.get(&job.subscription_id).is_none() {
            return Err(ResendError::NoSubscription(job.id, job.subscription_id));
        }
        job.status = JobStatus::Pending;
        job.attempts_in_round = 0;
        job.next_attempt_at_ms = now_ms();
        job.error = None;
        self.store.update_job(&job)?;
        self.submit(job.clone());
        Ok(job)
    }

    /// Deliveries in memory, waiting for an attempt or in one (more may
    /// wait in the store).
    pub fn queued(&self) -> usize {
        lock(&self.live).len()
    }

    /// Stops starting attempts and waits up to `grace` for those in flight;
    /// then every recorded state is in the store.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.stop.cancel();
        self.tasks.close();
        let finished = tokio::time::timeout(grace, self.tasks.wait()).await.is_ok();
        self.states.sync().await;
        finished
    }

    async fn run(self: Arc<Self>, endpoint: Arc<Endpoint>, mut job: Job) {
        let body = match sign::body(
            endpoint.sub.envelope,
            &job.event_type,
            &job.data,
            endpoint.sub.seed.as_deref(),
        ) {
            Ok(body) => Bytes::from(body),
            Err(e) => {
                job.status = JobStatus::Dead;
                job.error = Some(e.to_string());
                self.save(&job);
                return;
            }
        };
        loop {
            let wait = job.next_attempt_at_ms.saturating_sub(now_ms());
            let permits = tokio::select! {
                _ = self.stop.cancelled() => return, // stays pending in the store
                permits = async {
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                    let mine = endpoint.in_flight.acquire().await?;
                    let host = endpoint.host_in_flight.acquire().await?;
                    Ok::<_, tokio::sync::AcquireError>((mine, host))
                } => permits,
            };
            let Ok(_permits) = permits else { return };
            let (attempt, outcome) = self.attempt(&endpoint, &job.id, body.clone()).await;
            job.attempts.push(attempt);
            job.attempts_in_round += 1;
            let retries_used = job.attempts_in_round - 1;
            match outcome {
                Outcome::Delivered => {
                    job.status = JobStatus::Delivered;
                    job.error = None;
                    tracing::debug!(attempts = job.attempts_in_round, "delivered");
                    METRICS.delivered.fetch_add(1, Ordering::Relaxed);
                    self.save(&job);
                    return;
                }
                Outcome::Retry if retries_used < endpoint.sub.retry.max_retries => {
                    job.next_attempt_at_ms = now_ms() + backoff_ms(&endpoint.sub, retries_used + 1);
                    self.save(&job);
                }
                Outcome::Retry | Outcome::Refused => {
                    job.status = JobStatus::Dead;
                    let last = job.attempts.last();
                    job.error = Some(match last.and_then(|a| a.status) {
                        Some(s) if matches!(outcome, Outcome::Refused) => {
                            format!("endpoint answered {s}; not retried")
                        }
                        _ => format!(
                            "gave up after {} attempts: {}",
                            job.attempts_in_round,
                            last.and_then(|a| a.error.clone())
                                .or_else(|| last
                                    .and_then(|a| a.status)
                                    .map(|s| format!("status {s}")))
                                .unwrap_or_default()
                        ),
                    });
                    tracing::warn!(
                        error = job.error.as_deref().unwrap_or(""),
                        "delivery moved to dead letters"
                    );
                    METRICS.dead.fetch_add(1, Ordering::Relaxed);
                    self.save(&job);
                    return;
                }
            }
        }
    }

    fn save(&self, job: &Job) {
        self.states.save(job.clone());
    }

    async fn attempt(&self, endpoint: &Endpoint, job_id: &str, body: Bytes) -> (Attempt, Outcome) {
        let at_ms = now_ms();
        let timestamp = at_ms / 1000;
        let mut request = Request::post(endpoint.uri.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(
                http::header::USER_AGENT,
                concat!("hookhost/", env!("CARGO_PKG_VERSION")),
            )
            .header("webhook-id", job_id)
            .header("webhook-timestamp", timestamp);
        if !endpoint.keys.is_empty() {
            let body_text = std::str::from_utf8(&body).unwrap_or_default();
            request = request.header(
                "webhook-signature",
                sign::standard_signature(&endpoint.keys, job_id, timestamp, body_text),
            );
        }
        let request = match request.body(Full::new(body)) {
            Ok(r) => r,
            Err(e) => {
                let attempt = Attempt {
                    at_ms,
                    status: None,
                    latency_ms: 0.0,
                    error: Some(e.to_string()),
                };
                return (attempt, Outcome::Refused);
            }
        };
        let started = Instant::now();
        let timeout = Duration::from_millis(endpoint.sub.retry.timeout_ms);
        let result = tokio::time::timeout(timeout, async {
            let response = self.client.request(request).await?;
            let status = response.status();
            // Read the body so the connection can be reused.
            let _ = response.into_body().collect().await;
            Ok::<StatusCode, hyper_util::client::legacy::Error>(status)
        })
        .await;
        let latency_ms = started.elapsed().as_secs_f64() * 1e3;
        let (status, error, outcome) = match result {
            Ok(Ok(s)) if s.is_success() => (Some(s.as_u16()), None, Outcome::Delivered),
            Ok(Ok(s)) if s.is_server_error() => (Some(s.as_u16()), None, Outcome::Retry),
            Ok(Ok(s)) => (Some(s.as_u16()), None, Outcome::Refused),
            Ok(Err(e)) => (None, Some(error_chain(&e)), Outcome::Retry),
            Err(_) => (
                None,
                Some(format!("timed out after {} ms", timeout.as_millis())),
                Outcome::Retry,
            ),
        };
        tracing::debug!(status, error = error.as_deref(), latency_ms, "attempt");
        METRICS.observe_attempt_latency(latency_ms / 1e3);
        match outcome {
            Outcome::Delivered => &METRICS.attempts_ok,
            Outcome::Retry => &METRICS.attempts_failed,
            Outcome::Refused => &METRICS.attempts_refused,
        }
        .fetch_add(1, Ordering::Relaxed);
        (
            Attempt {
                at_ms,
                status,
                latency_ms,
                error,
            },
            outcome,
        )
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Wait before retry number `retry` (1-based).
fn backoff_ms(sub: &Subscription, retry: u32) -> u64 {
    let policy = &sub.retry;
    match policy.backoff {
        Backoff::Fixed => policy.backoff_ms,
        Backoff::Exponential => {
            let base = policy
                .backoff_ms
                .saturating_mul(1u64 << (retry - 1).min(40))
                .min(policy.max_backoff_ms);
            // ±25 % jitter so retries of many jobs do not arrive in lockstep.
            let noise = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos() as u64);
            let span = base / 2;
            if span == 0 {
                base
            } else {
                base - base / 4 + noise % span
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::model::RetryPolicy;

    fn sub(retry: RetryPolicy) -> Subscription {
        let mut c = Config::parse(
            "[[subscriptions]]\nid = \"a\"\nurl = \"http://x\"\ntypes = [\"*\"]\nenvelope = \"plain\"\n",
        )
        .unwrap();
        let mut s = c.subscriptions.remove(0);
        s.retry = retry;
        s
    }

    #[test]
    fn fixed_backoff_is_the_configured_wait() {
        let s = sub(RetryPolicy::default());
        assert_eq!(
            (1..=3).map(|r| backoff_ms(&s, r)).collect::<Vec<_>>(),
            [100, 100, 100]
        );
    }

    #[test]
    fn exponential_backoff_doubles_with_jitter_and_a_cap() {
        let s = sub(RetryPolicy {
            backoff: Backoff::Exponential,
            backoff_ms: 1000,
            max_backoff_ms: 10_000,
            ..RetryPolicy::default()
        });
        for (retry, base) in [
            (1u32, 1000u64),
            (2, 2000),
            (3, 4000),
            (4, 8000),
            (5, 10_000),
            (30, 10_000),
        ] {
            for _ in 0..20 {
                let wait = backoff_ms(&s, retry);
                assert!(
                    wait >= base * 3 / 4 && wait < base * 5 / 4,
                    "retry {retry}: {wait} vs {base}"
                );
            }
        }
    }
}
