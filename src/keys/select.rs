//! The keys a worker may use, and choosing one for a call: which keys serve
//! a model, which bucket each draws from (its account's, else its own), and
//! the reservation that picks the key with the most room right now.
//!
//! The worker reserves before it claims ([`Keyring::capacity`]): one round
//! trip asks for as many slots of a model as it could run. A fast key grants
//! them all at once (each at its GCRA moment, within [`BATCH_HORIZON`]); a
//! slow key grants one. Granted slots wait here, per model, for the jobs
//! claimed for them ([`Keyring::take`]); slots no job was claimed for go
//! back to their buckets ([`Keyring::give_back`]).

use sqlx::PgPool;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

use crate::keys::ApiKey;
use crate::store::StoreError;
use crate::store::buckets::{self, BucketSpec, Unused};
use crate::store::keys::{self as key_store, KeyRow};

/// The bucket of `scope` (account or key id) for `model`.
pub fn bucket_id(scope: &str, model: &str) -> String {
    format!("{scope}/{model}")
}

/// How far ahead one round trip may reserve slots of a fast key.
pub const BATCH_HORIZON: Duration = Duration::from_millis(50);
/// Most slots one round trip asks for.
const MAX_BATCH: usize = 64;
/// A granted slot of a fast key unused this long after its moment is
/// dropped, so late requests never bunch up with the next ones. A slow
/// key's slot keeps for half its interval: its send is booked when it
/// happens (`buckets::book_sent`), so the next slot is a full interval
/// after it however late it goes, and dropping it would waste the key's
/// whole interval (a minute, at 1/min).
const STALE_AFTER: Duration = Duration::from_millis(250);
/// How often a process looks for disabled keys due a re-test, and for
/// accounts other replicas discovered.
const REFRESH_EVERY: Duration = Duration::from_secs(10);
/// How soon to look again while a new key's first request is out.
const PROBE_WAIT: Duration = Duration::from_millis(500);
/// A new key's first request unanswered this long no longer holds back the
/// next new key.
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a disabled key is re-tested with one real request, by default.
pub const DEFAULT_RETEST: Duration = Duration::from_secs(15 * 60);

/// A reserved slot: call the provider with this key now.
#[derive(Debug)]
pub struct Slot<'a> {
    pub key: &'a ApiKey,
    pub bucket: String,
    /// Whether the bucket grants one slot at a time (its interval is longer
    /// than `BATCH_HORIZON`): the send is then booked at the moment it
    /// happens ([`buckets::book_sent`]).
    pub slow: bool,
    /// The key's place in the keyring.
    index: usize,
}

/// A slot granted by a reservation and not yet handed out.
#[derive(Debug)]
struct Granted {
    key: usize,
    bucket: String,
    at: Instant,
    /// How long past `at` the slot may still be used.
    stale_after: Duration,
    cost: u32,
    slow: bool,
}

/// Why no key could take the call now.
#[derive(Debug, Clone, PartialEq)]
pub enum NoSlot {
    /// How long until the soonest key serving the model frees up (database clock).
    Until(Duration),
    /// Every key that could serve the model is disabled.
    AllDisabled,
    /// No configured key serves the model at all.
    NoKeyServes,
    /// Every key that could serve the model belongs to an account (or is a
    /// key) whose budget is used up.
    OverBudget,
}

impl NoSlot {
    /// What an operator reads: why jobs of `model` wait.
    pub fn describe(&self, model: &str) -> String {
        match self {
            NoSlot::Until(wait) => format!(
                "every key serving {model} is busy or cooling; the next is free in {:.1}s",
                wait.as_secs_f64()
            ),
            NoSlot::AllDisabled => {
                format!("every key serving {model} is disabled; see genq keys list")
            }
            NoSlot::NoKeyServes => format!("no configured key serves {model}"),
            NoSlot::OverBudget => format!(
                "every key serving {model} is in an account whose budget is used up; see genq.budget_status"
            ),
        }
    }
}

/// The keys of this process and the buckets it has made sure exist.
pub struct Keyring {
    keys: Vec<ApiKey>,
    /// Rate assumed for a bucket with no configured limit, until learned.
    default_rpm: f64,
    ensured: Mutex<HashSet<String>>,
    /// Slots reserved per model and not yet handed to a job.
    granted: Mutex<HashMap<String, VecDeque<Granted>>>,
    /// How often a disabled key gets one re-test request.
    retest: Duration,
    /// When this process last looked for re-tests and discovered accounts.
    refreshed: Mutex<Option<Instant>>,
    /// Accounts the provider's answers showed, per key index, for keys with
    /// no configured account.
    discovered: Mutex<HashMap<usize, String>>,
    /// Keys that have answered at least once (here or on any replica).
    answered: Mutex<HashSet<usize>>,
    /// A never-used key whose first request is out, and since when: see
    /// [`Keyring::learn_account`].
    probing: Mutex<Option<(usize, Instant)>>,
    /// Accounts (bucket scopes) whose budget is used up: their keys rest.
    over_budget: Mutex<HashSet<String>>,
}

impl Keyring {
    pub fn new(keys: Vec<ApiKey>, default_rpm: f64) -> Self {
        Keyring {
            keys,
            default_rpm,
            ensured: Mutex::new(HashSet::new()),
            granted: Mutex::new(HashMap::new()),
            retest: DEFAULT_RETEST,
            refreshed: Mutex::new(None),
            discovered: Mutex::new(HashMap::new()),
            answered: Mutex::new(HashSet::new()),
            probing: Mutex::new(None),
            over_budget: Mutex::new(HashSet::new()),
        }
    }

    /// Leaves the keys of `scopes` (accounts, or keys without one) unused
    /// until the next call names other scopes: their budgets are used up.
    pub fn set_over_budget(&self, scopes: &[String]) {
        let mut over = self.over_budget.lock().expect("over_budget lock");
        over.clear();
        over.extend(scopes.iter().cloned());
    }

    /// How often a disabled key is re-tested.
    pub fn retest_every(&self) -> Duration {
        self.retest
    }

    /// Re-tests a disabled key with one real request at most this often
    /// (`GENQ_KEY_RETEST`); it comes back when that request succeeds.
    pub fn with_retest(mut self, every: Duration) -> Self {
        self.retest = every;
        self
    }

    /// Gives every key a row (keeping state a previous run persisted).
    pub async fn register(&self, pool: &PgPool) -> Result<(), StoreError> {
        let rows: Vec<KeyRow> = self
            .keys
            .iter()
            .map(|k| KeyRow {
                id: &k.id,
                account: k.account.as_deref(),
            })
            .collect();
        key_store::register(pool, &rows).await?;
        self.load_discovered(pool).await
    }

    /// Reserves up to `want` calls of `model` (the first costing `cost`
    /// images) in one round trip; returns how many were granted. They wait
    /// for [`Keyring::take`].
    pub async fn capacity(
        &self,
        pool: &PgPool,
        model: &str,
        cost: u32,
        want: usize,
    ) -> Result<Result<usize, NoSlot>, StoreError> {
        let want = want.clamp(1, MAX_BATCH) as u32;
        let (key, bucket, waits, interval) =
            match self.reserve_batch(pool, model, cost, want).await? {
                Ok(granted) => granted,
                Err(no) => return Ok(Err(no)),
            };
        let now = Instant::now();
        let slow = interval >= BATCH_HORIZON;
        let stale_after = if slow {
            STALE_AFTER.max(interval / 2)
        } else {
            STALE_AFTER
        };
        let n = waits.len();
        self.granted
            .lock()
            .expect("granted lock")
            .entry(model.to_string())
            .or_default()
            .extend(waits.into_iter().map(|wait| Granted {
                key,
                bucket: bucket.clone(),
                at: now + wait,
                stale_after,
                cost,
                slow,
            }));
        Ok(Ok(n))
    }

    /// The next slot granted for `model`, once its moment has come; `None`
    /// if none is left (stale ones are dropped: see `STALE_AFTER`).
    pub async fn take(&self, model: &str) -> Option<Slot<'_>> {
        let granted = {
            let mut all = self.granted.lock().expect("granted lock");
            let queue = all.get_mut(model)?;
            let now = Instant::now();
            loop {
                let g = queue.pop_front()?;
                if g.at + g.stale_after >= now {
                    break g;
                }
            }
        };
        tokio::time::sleep_until(granted.at).await;
        Some(Slot {
            key: &self.keys[granted.key],
            bucket: granted.bucket,
            slow: granted.slow,
            index: granted.key,
        })
    }

    /// Gives a slot that was taken but never used for a request (the job
    /// could not be sent) back to its bucket, with the `cost` in images it
    /// reserved.
    pub async fn return_taken(
        &self,
        pool: &PgPool,
        slot: Slot<'_>,
        cost: u32,
    ) -> Result<(), StoreError> {
        self.return_unsent(pool, vec![(slot.index, slot.bucket, cost)])
            .await
    }

    /// Gives `n` slots of `model` back to their buckets: the worker claimed
    /// fewer jobs than it reserved for, or a job failed before its call.
    pub async fn give_back(&self, pool: &PgPool, model: &str, n: usize) -> Result<(), StoreError> {
        let returned: Vec<(usize, String, u32)> = {
            let mut all = self.granted.lock().expect("granted lock");
            let Some(queue) = all.get_mut(model) else {
                return Ok(());
            };
            let keep = queue.len().saturating_sub(n);
            queue
                .drain(keep..)
                .map(|g| (g.key, g.bucket, g.cost))
                .collect()
        };
        self.return_unsent(pool, returned).await
    }

    /// Returns slots no request was sent for, `(key, bucket, cost)`, to
    /// their buckets.
    async fn return_unsent(
        &self,
        pool: &PgPool,
        returned: Vec<(usize, String, u32)>,
    ) -> Result<(), StoreError> {
        if returned.is_empty() {
            return Ok(());
        }
        {
            // A new key's first request that was never sent probes nothing.
            let mut probing = self.probing.lock().expect("probing lock");
            if probing.is_some_and(|(p, _)| returned.iter().any(|(key, _, _)| *key == p)) {
                *probing = None;
            }
        }
        let mut by_bucket: HashMap<String, Unused> = HashMap::new();
        for (_, bucket, cost) in returned {
            let unused = by_bucket.entry(bucket.clone()).or_insert(Unused {
                bucket_id: bucket,
                requests: 0,
                images: 0,
            });
            unused.requests += 1;
            unused.images += cost as i32;
        }
        let unused: Vec<Unused> = by_bucket.into_values().collect();
        buckets::give_back(pool, &unused).await
    }

    /// Disabled keys among `candidates` due their re-test, claimed for this
    /// process (looked up at most every [`REFRESH_EVERY`] or re-test period,
    /// whichever is shorter).
    async fn due_retests<'c>(
        &self,
        pool: &PgPool,
        candidates: &[(&'c str, &str)],
    ) -> Result<Vec<&'c str>, StoreError> {
        {
            let mut last = self.refreshed.lock().expect("refresh lock");
            if last.is_some_and(|at| at.elapsed() < REFRESH_EVERY.min(self.retest)) {
                return Ok(Vec::new());
            }
            *last = Some(Instant::now());
        }
        self.load_discovered(pool).await?;
        let ids: Vec<&str> = candidates.iter().map(|c| c.0).collect();
        let due = key_store::claim_retests(pool, &ids, self.retest).await?;
        Ok(ids
            .into_iter()
            .filter(|id| due.iter().any(|d| d == id))
            .collect())
    }

    /// Loads the accounts the provider named for our keys (this or another
    /// replica saw them).
    async fn load_discovered(&self, pool: &PgPool) -> Result<(), StoreError> {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        let found = key_store::discovered_accounts(pool, &ids).await?;
        let mut discovered = self.discovered.lock().expect("discovered lock");
        let mut answered = self.answered.lock().expect("answered lock");
        for (id, account, used) in found {
            if let Some(i) = self.keys.iter().position(|k| k.id == id) {
                if let Some(account) = account {
                    discovered.insert(i, account);
                }
                if used {
                    answered.insert(i);
                }
            }
        }
        Ok(())
    }

    /// Whether key `i`'s budget is known: it has a configured account, or
    /// has answered before (its answer named its account, if the provider
    /// names one).
    fn is_known(&self, i: usize) -> bool {
        self.keys[i].account.is_some() || self.answered.lock().expect("answered lock").contains(&i)
    }

    /// The one never-used key serving `model` that may send its first
    /// request now: only one at a time, so two new keys of one project are
    /// never both sent to before an answer shows they share a budget.
    fn probe_candidate(&self, model: &str) -> Option<usize> {
        let mut probing = self.probing.lock().expect("probing lock");
        if let Some((_, since)) = *probing {
            if since.elapsed() < PROBE_TIMEOUT {
                return None;
            }
            *probing = None; // its call never answered: let another go
        }
        (0..self.keys.len()).find(|&i| self.keys[i].serves(model) && !self.is_known(i))
    }

    /// The bucket scope of key `i`: its configured account, else the
    /// account the provider named for it, else (a key that never answered,
    /// while another key's answer named an account) that account, for now:
    /// a new key may share a known project's budget until its own answer
    /// says, so its first request never lands on a spent project. Else the
    /// key itself.
    fn scope_of(&self, i: usize) -> String {
        let key = &self.keys[i];
        if let Some(account) = &key.account {
            return account.clone();
        }
        let discovered = self.discovered.lock().expect("discovered lock");
        if let Some(account) = discovered.get(&i) {
            return account.clone();
        }
        let new = !self.answered.lock().expect("answered lock").contains(&i);
        let provisional = discovered.values().min().filter(|_| new);
        provisional.cloned().unwrap_or_else(|| key.id.clone())
    }

    /// Learns from an answer's `openai-organization` / `openai-project`
    /// headers which account a key with no configured account belongs to:
    /// keys of one project then share one budget, on every replica.
    pub async fn learn_account(
        &self,
        pool: &PgPool,
        key_id: &str,
        headers: &reqwest::header::HeaderMap,
    ) -> Result<(), StoreError> {
        let Some(i) = self.keys.iter().position(|k| k.id == key_id) else {
            return Ok(());
        };
        let account = account_from_headers(headers).filter(|_| self.keys[i].account.is_none());
        if let Some(account) = account {
            let known = self.discovered.lock().expect("discovered lock").get(&i) == Some(&account);
            if !known {
                // Stored first: a bucket for the account seeds itself from
                // its keys' own buckets (`buckets::ensure_buckets`).
                key_store::discover_account(pool, key_id, &account).await?;
                self.discovered
                    .lock()
                    .expect("discovered lock")
                    .insert(i, account);
            }
        }
        // Only now is the key known and its probe over: the next new key
        // already sees this account (see `scope_of`).
        self.answered.lock().expect("answered lock").insert(i);
        let mut probing = self.probing.lock().expect("probing lock");
        if probing.is_some_and(|(p, _)| p == i) {
            *probing = None;
        }
        Ok(())
    }

    /// One round trip for up to `want` slots: (key index, bucket, moments).
    async fn reserve_batch(
        &self,
        pool: &PgPool,
        model: &str,
        cost: u32,
        want: u32,
    ) -> Result<Result<(usize, String, Vec<Duration>, Duration), NoSlot>, StoreError> {
        if !self.keys.iter().any(|k| k.serves(model)) {
            return Ok(Err(NoSlot::NoKeyServes));
        }
        let over_budget = self.over_budget.lock().expect("over_budget lock").clone();
        // Most keyrings have no account over budget: then no scope is looked up.
        let within_budget =
            |i: usize| over_budget.is_empty() || !over_budget.contains(&self.scope_of(i));
        if !self
            .keys
            .iter()
            .enumerate()
            .any(|(i, k)| k.serves(model) && within_budget(i))
        {
            return Ok(Err(NoSlot::OverBudget));
        }
        let probe = self.probe_candidate(model);
        // Decided once, from one look at which keys are known: a new key's
        // answer may arrive while this round trip is out, and must not then
        // read as "every key is disabled" (which waits for the re-test).
        let mut held_back = false;
        let serving: Vec<(usize, String)> = self
            .keys
            .iter()
            .enumerate()
            .filter(|(i, k)| {
                let serves = k.serves(model) && within_budget(*i);
                let known = self.is_known(*i);
                held_back |= serves && !known && probe != Some(*i);
                serves && (known || probe == Some(*i))
            })
            .map(|(i, _)| (i, bucket_id(&self.scope_of(i), model)))
            .collect();
        // The new key first among equals, so it answers and shows its account.
        let mut serving = serving;
        serving.sort_by_key(|(i, _)| probe != Some(*i));
        if serving.is_empty() {
            // Every key is new and one's first request is out: wait for its answer.
            return Ok(Err(NoSlot::Until(PROBE_WAIT)));
        }
        self.ensure(pool, model, &serving, false).await?;
        let candidates: Vec<(&str, &str)> = serving
            .iter()
            .map(|(i, b)| (self.keys[*i].id.as_str(), b.as_str()))
            .collect();
        let retest = self.due_retests(pool, &candidates).await?;
        let single: Vec<&str> = probe.iter().map(|&i| self.keys[i].id.as_str()).collect();
        let reserve = || {
            buckets::reserve(
                pool,
                &candidates,
                cost,
                want,
                BATCH_HORIZON,
                &retest,
                &single,
            )
        };
        let mut found = reserve().await?;
        let nothing = found.key_id.is_none() && found.earliest.is_none();
        if found.missing > 0 || nothing {
            // Rows deleted since we ensured them (`genq keys reset` drops
            // learned buckets), or keys never registered: make them again so
            // every key stays in rotation.
            self.ensure(pool, model, &serving, true).await?;
            if found.key_id.is_none() {
                found = reserve().await?;
            }
        }
        Ok(match (found.key_id, found.earliest) {
            (Some(id), _) => {
                let (key, bucket) = serving
                    .into_iter()
                    .find(|(i, _)| self.keys[*i].id == id)
                    .expect("reserved one of ours");
                if probe == Some(key) {
                    *self.probing.lock().expect("probing lock") = Some((key, Instant::now()));
                }
                Ok((key, bucket, found.slots, found.interval.unwrap_or_default()))
            }
            (None, Some(at)) => Err(NoSlot::Until(at)),
            // The new key chosen for the first request cannot serve
            // (disabled, or blocked for this model, before this process
            // used it): it will never answer, so it must not hold the other
            // new keys back. Count it as known and look again at once.
            (None, None) if let Some(i) = probe => {
                self.answered.lock().expect("answered lock").insert(i);
                Err(NoSlot::Until(Duration::ZERO))
            }
            // A new key's first answer is still to come: look again soon.
            (None, None) if held_back => Err(NoSlot::Until(PROBE_WAIT)),
            (None, None) => Err(NoSlot::AllDisabled),
        })
    }

    async fn ensure(
        &self,
        pool: &PgPool,
        model: &str,
        serving: &[(usize, String)],
        force: bool,
    ) -> Result<(), StoreError> {
        let missing: Vec<BucketSpec> = {
            let ensured = self.ensured.lock().expect("keyring lock");
            let mut seen = HashSet::new();
            serving
                .iter()
                .filter(|(_, b)| force || !ensured.contains(b))
                .filter(|(_, b)| seen.insert(b.clone()))
                .map(|(i, b)| {
                    let k = &self.keys[*i];
                    let limits = k.limits_for(model);
                    BucketSpec {
                        id: b.clone(),
                        scope: self.scope_of(*i),
                        model: model.to_string(),
                        requests_per_minute: limits
                            .map_or(self.default_rpm, |l| l.requests_per_minute),
                        images_per_minute: limits.and_then(|l| l.images_per_minute),
                        burst: limits.map_or(1, |l| l.burst),
                        requests_per_day: limits.and_then(|l| l.requests_per_day),
                        images_per_day: limits.and_then(|l| l.images_per_day),
                        day_secs: limits.map_or(86_400.0, |l| l.daily_window_secs),
                        configured: limits.is_some(),
                    }
                })
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        if force {
            self.register(pool).await?;
        }
        buckets::ensure_buckets(pool, &missing).await?;
        let mut ensured = self.ensured.lock().expect("keyring lock");
        ensured.extend(missing.into_iter().map(|s| s.id));
        Ok(())
    }
}

/// The account an answer names: `organization/project`, or either alone.
/// Values that are not plain identifiers (letters, digits, `-_.`, at most
/// 64 characters) are ignored: headers come from outside.
pub fn account_from_headers(headers: &reqwest::header::HeaderMap) -> Option<String> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| {
                !v.is_empty()
                    && v.len() <= 64
                    && v.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            })
    };
    match (get("openai-organization"), get("openai-project")) {
        (Some(org), Some(project)) => Some(format!("{org}/{project}")),
        (Some(org), None) => Some(org.to_string()),
        (None, Some(project)) => Some(project.to_string()),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    #[test]
    fn accounts_come_from_plain_organization_and_project_headers() {
        let long = "x".repeat(65);
        // (organization, project, account)
        let rows: [(Option<&str>, Option<&str>, Option<&str>); 6] = [
            (Some("org-a"), Some("proj_1"), Some("org-a/proj_1")),
            (Some("org-a"), None, Some("org-a")),
            (None, Some("proj_1"), Some("proj_1")),
            (None, None, None),
            (Some("org a;drop"), Some("proj_1"), Some("proj_1")),
            (Some(&long), None, None),
        ];
        for (org, project, account) in rows {
            let mut headers = HeaderMap::new();
            if let Some(org) = org {
                headers.insert("openai-organization", HeaderValue::from_str(org).unwrap());
            }
            if let Some(project) = project {
                headers.insert("openai-project", HeaderValue::from_str(project).unwrap());
            }
            assert_eq!(
                account_from_headers(&headers).as_deref(),
                account,
                "{org:?} {project:?}"
            );
        }
    }
}
