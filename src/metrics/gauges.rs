//! The gauges `/metrics` reads from the database at scrape time: jobs per
//! (queue, model, state), why queued jobs wait, the oldest due job's age,
//! and key states and cooldowns.
//!
//! They are written as Prometheus text on each scrape rather than kept in
//! the process's recorder, so a series whose jobs are gone reads 0 (a
//! recorder gauge would keep its last value forever). Every (queue, model)
//! pair exported once keeps being exported, at 0 when it has emptied,
//! within the cap of [`labels::MAX_QUEUE_PAIRS`] pairs; pairs past the cap
//! are summed into `queue="other",model="other"`.
//!
//! Cost: queued and running jobs are counted exactly on every scrape from
//! their partial indexes (milliseconds, however many finished jobs are
//! kept). Counting the retained finished jobs reads every one of them
//! (about 300 ms at 1,000,000 rows), so those counts are kept: recounted on
//! the scrape itself while that takes under [`INLINE_COUNT`], otherwise in
//! the background at most once per [`recount_every`] (1% of the database's
//! time at most), the scrape answering with the last count and its age
//! (`genq_queue_finished_count_age_seconds`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::task::JoinHandle;

use super::labels::{self, sanitize};
use crate::job::JobState;
use crate::keys::KeyState;
use crate::store::StoreError;
use crate::store::inspect::{ActiveStat, FinishedCount};
use crate::store::keys::KeyStatus;

/// A finished-jobs count that took less than this is simply redone on every scrape.
pub const INLINE_COUNT: Duration = Duration::from_millis(10);
/// So is a count of fewer finished jobs than this, however long it took: a
/// slow moment on a loaded machine must not freeze a small table's numbers.
pub const INLINE_JOBS: i64 = 100_000;

/// How long to keep a finished-jobs count that took `took`: 100 times as
/// long (so recounting costs at most 1% of one connection), at least 1 s.
pub fn recount_every(took: Duration) -> Duration {
    (took * 100).max(Duration::from_secs(1))
}

/// What a scrape does about the finished-jobs count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recount {
    /// Count now and wait for it: there is no count yet, or counting is cheap.
    Inline,
    /// Answer with the kept count and recount in the background.
    Background,
    /// Answer with the kept count; it is fresh enough (or a recount is running).
    Keep,
}

/// Decides [`Recount`] from the last count's cost and age.
pub fn recount(last: Option<(Duration, Duration)>, recounting: bool) -> Recount {
    match last {
        None => Recount::Inline,
        Some((took, _)) if took < INLINE_COUNT => Recount::Inline,
        Some(_) if recounting => Recount::Keep,
        Some((took, age)) if age >= recount_every(took) => Recount::Background,
        Some(_) => Recount::Keep,
    }
}

/// The database gauges of one database, with what they remember between
/// scrapes. One per API server (`ApiState`); cheap to share.
#[derive(Clone)]
pub struct DbGauges {
    pool: PgPool,
    kept: Arc<Mutex<Kept>>,
}

impl std::fmt::Debug for DbGauges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbGauges").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Kept {
    finished: Option<Finished>,
    recounting: Option<JoinHandle<()>>,
    pairs: BTreeSet<(String, String)>,
    keys: BTreeSet<String>,
}

struct Finished {
    rows: Arc<Vec<FinishedCount>>,
    /// Finished jobs counted, in all.
    jobs: i64,
    /// When the count began: the moment its numbers describe.
    counted_at: Instant,
    took: Duration,
}

impl Drop for Kept {
    fn drop(&mut self) {
        if let Some(task) = self.recounting.take() {
            task.abort();
        }
    }
}

impl DbGauges {
    /// Gauges read from `pool`'s database.
    /// Counts the finished jobs once in the background at once, so the
    /// first scrape does not pay for it (inside a runtime; else the first
    /// scrape counts).
    pub fn new(pool: PgPool) -> Self {
        let gauges = DbGauges {
            pool,
            kept: Arc::default(),
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            let mut kept = gauges.kept();
            gauges.spawn_recount(&mut kept);
        }
        gauges
    }

    /// Recounts the finished jobs in the background into `kept`.
    fn spawn_recount(&self, kept: &mut Kept) {
        // Weak: dropping the gauges drops `Kept`, which aborts this.
        let (pool, slot) = (self.pool.clone(), Arc::downgrade(&self.kept));
        kept.recounting = Some(tokio::spawn(async move {
            match count_finished(&pool).await {
                Ok(counted) => {
                    if let Some(slot) = slot.upgrade() {
                        // A scrape may have counted since: keep the newer count.
                        let mut kept = slot.lock().unwrap_or_else(|e| e.into_inner());
                        if kept
                            .finished
                            .as_ref()
                            .is_none_or(|f| f.counted_at <= counted.counted_at)
                        {
                            kept.finished = Some(counted);
                        }
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "counting finished jobs for /metrics")
                }
            }
        }));
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The gauges as Prometheus text.
    pub async fn render(&self) -> Result<String, StoreError> {
        let active = crate::store::inspect::active_stats(&self.pool).await?;
        let (finished, finished_age) = self.finished().await?;
        let keys = crate::store::keys::list(&self.pool).await?;
        let spend = super::spend::render(&self.pool).await?;
        let mut kept = self.kept();
        let (mut text, pairs) =
            queue_text(&active, &finished, &kept.pairs, labels::MAX_QUEUE_PAIRS);
        kept.pairs = pairs;
        gauge_family(
            &mut text,
            "genq_queue_finished_count_age_seconds",
            "Age of the finished-job counts in genq_queue_jobs (recounted in the background when counting is slow)",
            [(String::new(), finished_age.as_secs_f64())],
        );
        let (keys_text, key_ids) = keys_text(&keys, &kept.keys);
        kept.keys = key_ids;
        text.push_str(&keys_text);
        text.push_str(&spend);
        Ok(text)
    }

    /// The finished-job counts to answer with, and their age.
    async fn finished(&self) -> Result<(Arc<Vec<FinishedCount>>, Duration), StoreError> {
        let decision = {
            let mut kept = self.kept();
            if kept
                .recounting
                .as_ref()
                .is_some_and(JoinHandle::is_finished)
            {
                kept.recounting = None;
            }
            let last = kept.finished.as_ref().map(|f| {
                let cost = if f.jobs < INLINE_JOBS {
                    Duration::ZERO
                } else {
                    f.took
                };
                (cost, f.counted_at.elapsed())
            });
            let decision = recount(last, kept.recounting.is_some());
            let answer = kept
                .finished
                .as_ref()
                .map(|f| (f.rows.clone(), f.counted_at.elapsed()));
            match (decision, answer) {
                (Recount::Inline, _) | (_, None) => None,
                (Recount::Background, answer) => {
                    self.spawn_recount(&mut kept);
                    answer
                }
                (Recount::Keep, answer) => answer,
            }
        };
        if let Some(answer) = decision {
            return Ok(answer);
        }
        let counted = count_finished(&self.pool).await?;
        let rows = counted.rows.clone();
        let mut kept = self.kept();
        if kept
            .finished
            .as_ref()
            .is_none_or(|f| f.counted_at <= counted.counted_at)
        {
            kept.finished = Some(counted);
        }
        Ok((rows, Duration::ZERO))
    }
}

async fn count_finished(pool: &PgPool) -> Result<Finished, StoreError> {
    let started = Instant::now();
    let rows = crate::store::inspect::finished_counts(pool).await?;
    Ok(Finished {
        jobs: rows.iter().map(|r| r.jobs).sum(),
        rows: Arc::new(rows),
        counted_at: started,
        took: started.elapsed(),
    })
}

/// One exported (queue, model) pair's numbers.
#[derive(Debug, Clone, Default, PartialEq)]
struct Pair {
    /// Jobs per state, in [`JobState::ALL`] order.
    jobs: [i64; 5],
    oldest_due_age_s: Option<f64>,
    waiting_disabled: i64,
    waiting_cooling: i64,
    waiting_budget: i64,
}

impl Pair {
    fn add(&mut self, other: &Pair) {
        for (mine, theirs) in self.jobs.iter_mut().zip(other.jobs) {
            *mine += theirs;
        }
        self.oldest_due_age_s = match (self.oldest_due_age_s, other.oldest_due_age_s) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.waiting_disabled += other.waiting_disabled;
        self.waiting_cooling += other.waiting_cooling;
        self.waiting_budget += other.waiting_budget;
    }

    /// Ranking for the cap: jobs queued or running first, then all jobs.
    fn weight(&self) -> (i64, i64) {
        let active = self.jobs[index(JobState::Queued)] + self.jobs[index(JobState::Running)];
        (active, self.jobs.iter().sum())
    }
}

fn index(state: JobState) -> usize {
    JobState::ALL
        .iter()
        .position(|s| *s == state)
        .expect("every state is in ALL")
}

/// The queue gauges as text, and the pairs to remember for the next scrape.
/// Pairs are named by their sanitized labels; past `cap` pairs, the lightest
/// are summed into (`other`, `other`). A remembered pair with no jobs now
/// reads 0 (it is forgotten only when the cap needs its room).
fn queue_text(
    active: &[ActiveStat],
    finished: &[FinishedCount],
    remembered: &BTreeSet<(String, String)>,
    cap: usize,
) -> (String, BTreeSet<(String, String)>) {
    let mut now: BTreeMap<(String, String), Pair> = BTreeMap::new();
    for row in active {
        let pair = now
            .entry((sanitize(&row.queue), sanitize(&row.model)))
            .or_default();
        let waiting = |reason: &str| {
            if row.waiting.as_deref() == Some(reason) {
                row.jobs
            } else {
                0
            }
        };
        pair.add(&Pair {
            jobs: jobs_in(row.state, row.jobs),
            oldest_due_age_s: row.oldest_due_age_s,
            waiting_disabled: waiting("disabled"),
            waiting_cooling: waiting("cooling"),
            waiting_budget: waiting("budget"),
        });
    }
    for row in finished {
        now.entry((sanitize(&row.queue), sanitize(&row.model)))
            .or_default()
            .add(&Pair {
                jobs: jobs_in(row.state, row.jobs),
                ..Pair::default()
            });
    }
    let mut shown = labels::fold_lightest(now, cap, Pair::weight, Pair::add);
    // Emptied pairs read 0, in the room the cap leaves.
    let room = (cap + 1).saturating_sub(shown.len());
    for key in remembered
        .iter()
        .filter(|k| !shown.contains_key(*k))
        .take(room)
        .cloned()
        .collect::<Vec<_>>()
    {
        shown.insert(key, Pair::default());
    }

    let mut text = String::new();
    gauge_family(
        &mut text,
        "genq_queue_jobs",
        "Jobs per queue, model and state",
        shown.iter().flat_map(|((queue, model), pair)| {
            JobState::ALL.iter().map(move |state| {
                (
                    format!("queue=\"{queue}\",model=\"{model}\",state=\"{state}\""),
                    pair.jobs[index(*state)] as f64,
                )
            })
        }),
    );
    gauge_family(
        &mut text,
        "genq_queue_waiting_jobs",
        "Queued jobs that wait because every key serving their model is disabled or cooling, or their queue's budget is used up",
        shown.iter().flat_map(|((queue, model), pair)| {
            [
                ("disabled", pair.waiting_disabled),
                ("cooling", pair.waiting_cooling),
                ("budget", pair.waiting_budget),
            ]
            .map(|(reason, n)| {
                (
                    format!("queue=\"{queue}\",model=\"{model}\",reason=\"{reason}\""),
                    n as f64,
                )
            })
        }),
    );
    gauge_family(
        &mut text,
        "genq_queue_oldest_due_age_seconds",
        "Seconds the oldest due queued job has waited (0 when none is due)",
        shown.iter().map(|((queue, model), pair)| {
            (
                format!("queue=\"{queue}\",model=\"{model}\""),
                pair.oldest_due_age_s.unwrap_or(0.0),
            )
        }),
    );
    (text, shown.into_keys().collect())
}

fn jobs_in(state: JobState, n: i64) -> [i64; 5] {
    let mut jobs = [0; 5];
    jobs[index(state)] = n;
    jobs
}

/// Key gauges as text, and the key ids to remember (a key gone from the
/// table reads a 0 cooldown).
fn keys_text(keys: &[KeyStatus], remembered: &BTreeSet<String>) -> (String, BTreeSet<String>) {
    let mut text = String::new();
    gauge_family(
        &mut text,
        "genq_keys",
        "API keys per state",
        KeyState::ALL.map(|state| {
            let n = keys.iter().filter(|k| k.state == state).count();
            (format!("state=\"{state}\""), n as f64)
        }),
    );
    let mut cooldowns: BTreeMap<String, f64> =
        remembered.iter().map(|id| (id.clone(), 0.0)).collect();
    for key in keys {
        cooldowns.insert(
            sanitize(&key.id),
            key.cooldown_remaining_secs.unwrap_or(0.0).max(0.0),
        );
    }
    gauge_family(
        &mut text,
        "genq_key_cooldown_seconds",
        "Seconds until a cooling key may be used again",
        cooldowns
            .iter()
            .map(|(id, secs)| (format!("key_id=\"{id}\""), *secs)),
    );
    (text, cooldowns.into_keys().collect())
}

/// Appends one gauge family: its HELP and TYPE lines and one line per
/// (labels, value); `labels` are already sanitized (no quote, backslash or newline).
fn gauge_family(
    text: &mut String,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (String, f64)>,
) {
    let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} gauge");
    for (labels, value) in series {
        if labels.is_empty() {
            let _ = writeln!(text, "{name} {value}");
        } else {
            let _ = writeln!(text, "{name}{{{labels}}} {value}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn active(queue: &str, model: &str, state: JobState, jobs: i64) -> ActiveStat {
        ActiveStat {
            queue: queue.into(),
            model: model.into(),
            state,
            jobs,
            oldest_due_age_s: (state == JobState::Queued).then_some(2.5),
            waiting: None,
        }
    }

    fn finished(queue: &str, model: &str, jobs: i64) -> FinishedCount {
        FinishedCount {
            queue: queue.into(),
            model: model.into(),
            state: JobState::Succeeded,
            jobs,
        }
    }

    fn pair(queue: &str, model: &str) -> (String, String) {
        (queue.to_string(), model.to_string())
    }

    #[test]
    fn recounting_follows_the_count_s_cost() {
        let ms = Duration::from_millis;
        // (last count's cost and age, recount running, decision)
        let rows = [
            (None, false, Recount::Inline),
            (Some((ms(2), ms(0))), false, Recount::Inline),
            (Some((ms(300), ms(5_000))), false, Recount::Keep),
            (Some((ms(300), ms(30_000))), false, Recount::Background),
            (Some((ms(300), ms(30_000))), true, Recount::Keep),
            (Some((ms(10), ms(999))), false, Recount::Keep),
            (Some((ms(10), ms(1_000))), false, Recount::Background),
        ];
        for (last, running, want) in rows {
            assert_eq!(recount(last, running), want, "{last:?} {running}");
        }
    }

    #[test]
    fn an_emptied_pair_reads_zero() {
        let (_, remembered) = queue_text(
            &[active("q", "m", JobState::Queued, 3)],
            &[],
            &BTreeSet::new(),
            10,
        );
        assert_eq!(remembered, BTreeSet::from([pair("q", "m")]));
        let (text, again) = queue_text(&[], &[], &remembered, 10);
        for line in [
            "genq_queue_jobs{queue=\"q\",model=\"m\",state=\"queued\"} 0\n",
            "genq_queue_jobs{queue=\"q\",model=\"m\",state=\"running\"} 0\n",
            "genq_queue_waiting_jobs{queue=\"q\",model=\"m\",reason=\"cooling\"} 0\n",
            "genq_queue_oldest_due_age_seconds{queue=\"q\",model=\"m\"} 0\n",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert_eq!(again, remembered);
    }

    #[test]
    fn pairs_past_the_cap_are_folded_into_other() {
        let rows = [
            active("big", "m", JobState::Queued, 100),
            active("mid", "m", JobState::Running, 10),
            active("small", "m", JobState::Queued, 1),
            active("tiny", "m\"x", JobState::Queued, 1),
        ];
        let (text, shown) = queue_text(&rows, &[finished("old", "m", 1_000)], &BTreeSet::new(), 2);
        assert_eq!(
            shown,
            BTreeSet::from([pair("big", "m"), pair("mid", "m"), pair("other", "other")])
        );
        for line in [
            "genq_queue_jobs{queue=\"big\",model=\"m\",state=\"queued\"} 100\n",
            "genq_queue_jobs{queue=\"mid\",model=\"m\",state=\"running\"} 10\n",
            "genq_queue_jobs{queue=\"other\",model=\"other\",state=\"queued\"} 2\n",
            "genq_queue_jobs{queue=\"other\",model=\"other\",state=\"succeeded\"} 1000\n",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert!(!text.contains("tiny") && !text.contains("m\"x"), "{text}");
        // Remembered pairs never push the export past the cap.
        let many: BTreeSet<_> = (0..10).map(|i| pair(&format!("gone{i}"), "m")).collect();
        let (_, shown) = queue_text(&rows, &[], &many, 2);
        assert_eq!(shown.len(), 3);
    }

    #[test]
    fn waiting_reasons_are_counted_per_pair() {
        let mut row = active("q", "m", JobState::Queued, 4);
        row.waiting = Some("disabled".into());
        let (text, _) = queue_text(&[row], &[], &BTreeSet::new(), 10);
        assert!(
            text.contains(
                "genq_queue_waiting_jobs{queue=\"q\",model=\"m\",reason=\"disabled\"} 4\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "genq_queue_waiting_jobs{queue=\"q\",model=\"m\",reason=\"cooling\"} 0\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("genq_queue_oldest_due_age_seconds{queue=\"q\",model=\"m\"} 2.5\n"),
            "{text}"
        );
    }
}
