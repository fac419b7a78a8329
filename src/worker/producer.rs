//! The producer: capacity first, then claim. For a rate-limited provider it
//! asks for room on a model's keys before it claims any job of that model,
//! and claims at most as many as were granted, so a job that would only wait
//! is never claimed and never written: it stays `queued` in its place.
//!
//! - Queues are taken in turn, starting one further each round, so a busy
//!   queue never starves the others.
//! - Within a queue, every model with due jobs is asked for separately, the
//!   one with the most urgent job first: a model with no room never blocks a
//!   model with room (no head-of-line blocking).
//! - A model with no room is remembered until its keys' soonest availability
//!   (by the database's clock), and not asked again before then unless a key
//!   changes (`genq_keys`), so waiting costs no reservations.
//! - Jobs that list `fallback_models` run on a fallback that has room when
//!   their own model must wait longer than `fallback_after`.
//! - A queue whose budget is used up is not claimed from, and the keys of
//!   an account whose budget is used up are not used (`crate::budget`):
//!   the budgets are read once a round while any is set (a worker with none
//!   looks for one when `genq_keys` announces a change, or every
//!   [`BUDGETS_RECHECK`]), and the worker looks again when the soonest of
//!   them resets.

use sqlx::PgPool;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::time::Instant;

use super::WorkerConfig;
use crate::budget::{Period, Scope};
use crate::job::Job;
use crate::provider::{Capacity, Provider};
use crate::store::jobs::{self, Serve};
use crate::store::{StoreError, budgets};

/// How long a model whose keys are all disabled (or that no key serves) is
/// left alone, unless a key changes first.
const NO_KEY_RECHECK: Duration = Duration::from_secs(60);
/// How often a worker with no budget set looks whether one was, should it
/// miss the `genq_keys` announcement.
const BUDGETS_RECHECK: Duration = Duration::from_secs(30);
/// How often "jobs of this model wait" is logged per model.
const WAIT_REPORT_EVERY: Duration = Duration::from_secs(10);

/// What one round claimed.
pub(super) struct Round {
    pub jobs: Vec<Job>,
    /// Every model with room got all the jobs it asked for: there may be more.
    pub more: bool,
    /// The soonest a model that had no room may have some.
    pub retry_at: Option<Instant>,
}

/// A model with no room, until when, and why.
struct Blocked {
    until: Instant,
    /// How long it had to wait when it was found blocked (None: no usable key).
    wait: Option<Duration>,
}

pub(super) struct Producer<P> {
    pool: PgPool,
    cfg: Arc<WorkerConfig>,
    provider: Arc<P>,
    /// Set by the listener when a key changed: forget every block.
    keys_changed: Arc<AtomicBool>,
    blocked: HashMap<String, Blocked>,
    reported: HashMap<String, Instant>,
    turn: usize,
    /// Budgets found used up in the last round (to log each change once).
    over_budget: BTreeSet<(Scope, String, Period)>,
    /// Whether any budget is set, and when that was looked up.
    any_budget: Option<(bool, Instant)>,
}

/// Queues whose budget is used up, each with how long until it resets.
type StoppedQueues = HashMap<String, Duration>;

impl<P: Provider> Producer<P> {
    pub fn new(
        pool: PgPool,
        cfg: Arc<WorkerConfig>,
        provider: Arc<P>,
        keys_changed: Arc<AtomicBool>,
    ) -> Self {
        Producer {
            pool,
            cfg,
            provider,
            keys_changed,
            blocked: HashMap::new(),
            reported: HashMap::new(),
            turn: 0,
            over_budget: BTreeSet::new(),
            any_budget: None,
        }
    }

    /// Claims up to `free` jobs.
    pub async fn claim(&mut self, free: usize) -> Result<Round, StoreError> {
        let free = free.min(self.cfg.claim_batch);
        if self.keys_changed.swap(false, Ordering::SeqCst) {
            // A key or a budget changed: forget every block, look again.
            self.blocked.clear();
            self.any_budget = None;
        }
        let stopped = self.read_budgets().await?;
        let resets = stopped
            .values()
            .min()
            .map(|wait| Instant::now() + (*wait).max(Duration::from_millis(100)));
        let queues: Vec<String> = self
            .rotated_queues()
            .into_iter()
            .filter(|q| !stopped.contains_key(q))
            .collect();
        if !self.provider.limited() {
            let jobs = if queues.is_empty() {
                Vec::new()
            } else {
                jobs::claim(&self.pool, &self.cfg.id, &queues, free, self.cfg.lease).await?
            };
            let more = jobs.len() == free;
            return Ok(Round {
                jobs,
                more,
                retry_at: resets,
            });
        }
        let mut round = Round {
            jobs: Vec::new(),
            more: false,
            retry_at: resets,
        };
        for queue in queues {
            if round.jobs.len() >= free {
                round.more = true;
                break;
            }
            for due in jobs::due_models(&self.pool, &queue).await? {
                let room = free - round.jobs.len();
                if room == 0 {
                    round.more = true;
                    break;
                }
                if self.is_blocked(&due.model, &mut round) {
                    self.try_fallbacks(&queue, &due.model, room, &mut round)
                        .await?;
                    continue;
                }
                match self.provider.reserve(&due.model, due.cost, room).await {
                    Capacity::Slots(granted) => {
                        let serve = Serve::Model(&due.model);
                        let got = self.claim_for(&queue, serve, &due.model, granted).await?;
                        round.more |= got.len() == granted;
                        round.jobs.extend(got);
                    }
                    Capacity::Wait { retry_in, reason } => {
                        self.block(&due.model, retry_in, &reason, &mut round).await;
                        self.try_fallbacks(&queue, &due.model, room, &mut round)
                            .await?;
                    }
                }
            }
        }
        Ok(round)
    }

    /// Reads the used-up budgets: rests the keys of accounts at their cap,
    /// logs each budget that stops or resumes work, and returns this
    /// worker's queues at their cap.
    async fn read_budgets(&mut self) -> Result<StoppedQueues, StoreError> {
        let any = match self.any_budget {
            Some((any, at)) if at.elapsed() < BUDGETS_RECHECK => any,
            _ => {
                let any = budgets::any(&self.pool).await?;
                self.any_budget = Some((any, Instant::now()));
                any
            }
        };
        if !any && self.over_budget.is_empty() {
            return Ok(StoppedQueues::new());
        }
        let exhausted = budgets::exhausted(&self.pool).await?;
        let now: BTreeSet<(Scope, String, Period)> = exhausted
            .iter()
            .map(|b| (b.scope, b.name.clone(), b.period))
            .collect();
        for b in exhausted.iter().filter(|b| {
            !self
                .over_budget
                .contains(&(b.scope, b.name.clone(), b.period))
        }) {
            tracing::warn!(
                event = "budget_reached",
                scope = %b.scope,
                name = %b.name,
                period = %b.period,
                spent_usd = %b.spent_usd,
                cap_usd = %b.cap_usd,
                resets_at = %b.resets_at,
                "{}; its work waits (nothing fails)",
                b.reason
            );
        }
        for (scope, name, period) in self.over_budget.difference(&now) {
            tracing::info!(event = "budget_resumed", scope = %scope, name = %name, period = %period, "budget has room again; work resumes");
        }
        self.over_budget = now;
        let accounts: Vec<String> = exhausted
            .iter()
            .filter(|b| b.scope == Scope::Account)
            .map(|b| b.name.clone())
            .collect();
        self.provider.over_budget(&accounts);
        let mut stopped = StoppedQueues::new();
        for b in exhausted.iter().filter(|b| b.scope == Scope::Queue) {
            // Stopped until the latest of its used-up windows resets.
            let wait = Duration::from_secs_f64(b.resets_in_secs.max(0.0));
            let entry = stopped.entry(b.name.clone()).or_insert(wait);
            *entry = (*entry).max(wait);
        }
        Ok(stopped)
    }

    /// The queues, starting one further each round.
    fn rotated_queues(&mut self) -> Vec<String> {
        let queues = &self.cfg.queues;
        let start = self.turn % queues.len().max(1);
        self.turn = self.turn.wrapping_add(1);
        queues[start..]
            .iter()
            .chain(&queues[..start])
            .cloned()
            .collect()
    }

    /// True while `model` is known to have no room; notes when it may.
    fn is_blocked(&mut self, model: &str, round: &mut Round) -> bool {
        let Some(b) = self.blocked.get(model) else {
            return false;
        };
        if b.until <= Instant::now() {
            self.blocked.remove(model);
            return false;
        }
        round.retry_at = Some(round.retry_at.map_or(b.until, |r| r.min(b.until)));
        true
    }

    async fn block(
        &mut self,
        model: &str,
        retry_in: Option<Duration>,
        reason: &str,
        round: &mut Round,
    ) {
        let until = Instant::now() + retry_in.unwrap_or(NO_KEY_RECHECK);
        self.blocked.insert(
            model.to_string(),
            Blocked {
                until,
                wait: retry_in,
            },
        );
        round.retry_at = Some(round.retry_at.map_or(until, |r| r.min(until)));
        crate::metrics::waiting_for_capacity(model);
        let now = Instant::now();
        let due = self
            .reported
            .get(model)
            .is_none_or(|at| now.duration_since(*at) >= WAIT_REPORT_EVERY);
        if due {
            self.reported.insert(model.to_string(), now);
            tracing::info!(
                event = "waiting_for_capacity",
                model,
                reason,
                "jobs wait in line (nothing claimed, no attempt spent)"
            );
        }
    }

    /// Jobs of `model` that list a fallback with room run on it, when
    /// `model` must wait longer than `fallback_after`.
    async fn try_fallbacks(
        &mut self,
        queue: &str,
        model: &str,
        room: usize,
        round: &mut Round,
    ) -> Result<(), StoreError> {
        let long_wait = self
            .blocked
            .get(model)
            .is_some_and(|b| b.wait.is_none_or(|w| w > self.cfg.fallback_after));
        if !long_wait || room == 0 {
            return Ok(());
        }
        let mut room = room;
        for fallback in jobs::fallback_models(&self.pool, queue, model).await? {
            if room == 0 || fallback == model || self.is_blocked(&fallback, round) {
                continue;
            }
            match self.provider.reserve(&fallback, 1, room).await {
                Capacity::Slots(granted) => {
                    let serve = Serve::Fallback {
                        model,
                        fallback: &fallback,
                    };
                    let mut got = self.claim_for(queue, serve, &fallback, granted).await?;
                    for job in &mut got {
                        // This attempt runs on the fallback; the row keeps its model.
                        job.model = fallback.clone();
                    }
                    room -= got.len();
                    round.jobs.extend(got);
                }
                Capacity::Wait { retry_in, reason } => {
                    self.block(&fallback, retry_in, &reason, round).await
                }
            }
        }
        Ok(())
    }

    /// Claims up to `granted` jobs and gives back the slots no job took.
    async fn claim_for(
        &self,
        queue: &str,
        serve: Serve<'_>,
        slots_of: &str,
        granted: usize,
    ) -> Result<Vec<Job>, StoreError> {
        let claimed = jobs::claim_model(
            &self.pool,
            &self.cfg.id,
            queue,
            serve,
            granted,
            self.cfg.lease,
        )
        .await;
        let taken = claimed.as_ref().map_or(0, Vec::len);
        if taken < granted {
            self.provider.give_back(slots_of, granted - taken).await;
        }
        claimed
    }
}
