//! State shared on etcd, so that any machine with the plan can see, continue or stop a
//! rollout:
//!
//! - `{prefix}/plans/{name}/lock` and `{prefix}/backends/{digest}`: the locks, each a key
//!   naming its holder, created only where none exists and attached to the holder's lease.
//!   The running command keeps its lease alive; a process that dies loses its locks when
//!   the lease runs out, so a dead runner never leaves a lock to guess about.
//! - `{prefix}/plans/{name}/journals/{id}/{seq}`: the journal, one record per key. Every
//!   record is written in a transaction that succeeds only while this process's lease still
//!   holds the plan's lock: a process that lost its lock (a lease that ran out, an etcd it
//!   cannot reach, a cluster without quorum) cannot write, so it changes nothing.
//!   `{prefix}/plans/{name}/current` names the last rollout's journal; older ones are its
//!   history, the newest `history::KEEP` kept.
//! - `{prefix}/plans/{name}/abort`: an abort request, which the running command watches.
//!
//! The client is asynchronous; the commands are not, and the journal is written from the
//! rollout's own runtime. So the store runs the client on a runtime of its own and waits for
//! each answer (as the local journal waits for its fsync), within a bounded time.

mod background;
mod journal;
mod requests;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, PutOptions,
    TlsOptions, Txn, TxnOp, TxnOpResponse,
};

pub use self::journal::SharedJournal;

use self::background::{deliver_request, keep_alive, watch_once};
use self::requests::{deepest, request_timeout, retrying, spawned};

use crate::journal::history::{KEEP, Past, past_of};
use crate::journal::{Story, Torn};
use crate::lock::{Holder, LockError};
use crate::plan::SharedState;

/// How long `connect` tries for a member to answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

pub struct Shared {
    runtime: Option<tokio::runtime::Runtime>,
    client: Client,
    endpoints: Vec<String>,
    prefix: String,
    /// `{prefix}/plans/{name}`: this plan's keys.
    base: String,
    ttl: Duration,
    /// This process's lease, once it took a lock.
    lease: Mutex<Option<i64>>,
    /// The revision at which this process took the plan's lock: an abort request written
    /// before it was meant for an earlier holder, one written after is for this command.
    locked_at: Mutex<Option<i64>>,
}

impl Shared {
    /// Connects and reads this plan's journal pointer once: an etcd that cannot be reached,
    /// refuses our credentials or has no quorum fails here, before anything is touched.
    pub fn connect(settings: &SharedState, name: &str) -> anyhow::Result<Shared> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("etcd")
            .enable_all()
            .build()?;
        let mut options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(request_timeout(settings.lease_ttl))
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
        if let (Ok(user), Ok(password)) = (
            std::env::var("ETCD_USERNAME"),
            std::env::var("ETCD_PASSWORD"),
        ) {
            options = options.with_user(user, password);
        }
        if settings.ca_file.is_some() || settings.identity.is_some() {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &settings.ca_file {
                let pem = std::fs::read(ca).map_err(|error| {
                    anyhow::anyhow!("cannot read ca_file {}: {error}", ca.display())
                })?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            if let Some((cert, key)) = &settings.identity {
                let read = |path: &std::path::Path, what: &str| {
                    std::fs::read(path).map_err(|error| {
                        anyhow::anyhow!("cannot read {what} {}: {error}", path.display())
                    })
                };
                tls = tls.identity(Identity::from_pem(
                    read(cert, "cert_file")?,
                    read(key, "key_file")?,
                ));
            }
            options = options.with_tls(tls);
        }
        let endpoints = settings.endpoints.clone();
        let base = format!("{}/plans/{name}", settings.prefix);
        let current = format!("{base}/current");
        let client = {
            let endpoints = endpoints.clone();
            // Long enough to ride out a leader election, short enough that an etcd nobody
            // can reach fails pre-flight promptly.
            let budget = request_timeout(settings.lease_ttl).min(CONNECT_TIMEOUT);
            spawned(&runtime, async move {
                let client = Client::connect(endpoints, Some(options)).await?;
                // Any member that answers will do: one of three may be down.
                retrying(budget, || {
                    let (mut client, current) = (client.clone(), current.clone());
                    async move { client.get(current, None).await }
                })
                .await?;
                Ok::<_, etcd_client::Error>(client)
            })
        }
        .map_err(|error| {
            anyhow::anyhow!(
                "cannot use etcd at {}: {}",
                endpoints.join(", "),
                deepest(&error)
            )
        })?;
        Ok(Shared {
            runtime: Some(runtime),
            client,
            endpoints,
            prefix: settings.prefix.clone(),
            base,
            ttl: settings.lease_ttl,
            lease: Mutex::new(None),
            locked_at: Mutex::new(None),
        })
    }

    pub fn describe(&self) -> String {
        format!("etcd at {} (keys {})", self.endpoints.join(", "), self.base)
    }

    pub fn id(&self) -> String {
        crate::journal::sha256_hex(self.base.as_bytes())[..16].to_owned()
    }

    fn lock_key(&self) -> String {
        format!("{}/lock", self.base)
    }

    fn abort_key(&self) -> String {
        format!("{}/abort", self.base)
    }

    fn journals(&self) -> String {
        format!("{}/journals/", self.base)
    }

    /// Runs `future` on the store's runtime and waits for it, from anywhere (a plain
    /// thread, or a task of another runtime).
    fn call<T: Send + 'static>(&self, future: impl Future<Output = T> + Send + 'static) -> T {
        spawned(self.runtime.as_ref().expect("the etcd runtime"), future)
    }

    /// One request to etcd, made again while no member answers (a member that died: the
    /// next attempt goes to another), for at most the request timeout in all. Every request
    /// the store makes may be made twice: a record written twice is the same key with the
    /// same value, a lock taken twice is found held by this process's own lease.
    fn request<T, F, Fut>(&self, attempt: F) -> Result<T, etcd_client::Error>
    where
        T: Send + 'static,
        F: Fn(Client) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, etcd_client::Error>> + Send,
    {
        let client = self.client.clone();
        let budget = request_timeout(self.ttl);
        self.call(async move { retrying(budget, || attempt(client.clone())).await })
    }

    /// This process's lease, granted (and kept alive until the process ends) on first use.
    fn lease(&self) -> Result<i64, etcd_client::Error> {
        let mut lease = self.lease.lock().expect("the lease lock");
        if let Some(id) = *lease {
            return Ok(id);
        }
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(10);
        let id = self.request(move |mut client| async move {
            client.lease_grant(ttl, None).await.map(|lease| lease.id())
        })?;
        let client = self.client.clone();
        let interval = self.ttl / 4;
        self.runtime
            .as_ref()
            .expect("the etcd runtime")
            .spawn(keep_alive(client, id, interval));
        *lease = Some(id);
        Ok(id)
    }

    /// Takes the lock at `key`; with it, the revision at which it was taken.
    fn take(&self, key: String, what: &str, me: &Holder) -> Result<(SharedLock, i64), LockError> {
        let unusable = |error: etcd_client::Error| LockError::Io {
            path: key.clone().into(),
            source: std::io::Error::other(format!("etcd: {}", deepest(&error))),
        };
        let lease = self.lease().map_err(unusable)?;
        let mut me = me.clone();
        me.lease = Some(lease);
        let record = serde_json::to_vec(&me).expect("a holder serializes");
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.clone(),
                record,
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(key.clone(), None)]);
        let response = self
            .request(move |mut client| {
                let txn = txn.clone();
                async move { client.txn(txn).await }
            })
            .map_err(unusable)?;
        if response.succeeded() {
            let revision = response.header().map_or(0, |header| header.revision());
            return Ok((self.held(key, lease), revision));
        }
        let holder = response.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(get) => get.kvs().first().map(|kv| {
                let mut holder: Holder =
                    serde_json::from_slice(kv.value()).unwrap_or_else(|_| Holder::unknown());
                holder.lease = Some(kv.lease());
                (holder, kv.create_revision())
            }),
            _ => None,
        });
        match holder {
            // Ours already (the same process taking it again, or a retried request that
            // had taken it).
            Some((holder, revision)) if holder.lease == Some(lease) => {
                Ok((self.held(key, lease), revision))
            }
            Some((holder, _)) => Err(LockError::Held {
                what: what.to_owned(),
                holder: Box::new(holder),
            }),
            // Released between the two reads: try again.
            None => self.take(key, what, &me),
        }
    }

    fn held(&self, key: String, lease: i64) -> SharedLock {
        SharedLock {
            client: self.client.clone(),
            handle: self.handle(),
            key,
            lease,
        }
    }

    fn handle(&self) -> tokio::runtime::Handle {
        self.runtime
            .as_ref()
            .expect("the etcd runtime")
            .handle()
            .clone()
    }

    pub fn lock_plan(&self, what: &str, me: &Holder) -> Result<SharedLock, LockError> {
        let (lock, revision) = self.take(self.lock_key(), what, me)?;
        *self.locked_at.lock().expect("the revision lock") = Some(revision);
        Ok(lock)
    }

    pub fn lock_backend(
        &self,
        key: &str,
        what: &str,
        me: &Holder,
    ) -> Result<SharedLock, LockError> {
        self.take(format!("{}/backends/{key}", self.prefix), what, me)
            .map(|(lock, _)| lock)
    }

    /// Reads `key` (`prefix`: every key under it, in order; `keys_only`: without their
    /// values); `what` says what it is, in an error.
    fn read(
        &self,
        key: String,
        (prefix, keys_only): (bool, bool),
        what: &str,
    ) -> anyhow::Result<etcd_client::GetResponse> {
        self.request(move |mut client| {
            let key = key.clone();
            let mut options = GetOptions::new();
            if prefix {
                options = options.with_prefix();
            }
            if keys_only {
                options = options.with_keys_only();
            }
            async move { client.get(key, Some(options)).await }
        })
        .map_err(|error| anyhow::anyhow!("cannot read {what} from etcd: {}", deepest(&error)))
    }

    pub fn plan_holder(&self) -> anyhow::Result<Option<Holder>> {
        let response = self.read(self.lock_key(), (false, false), "the lock")?;
        Ok(response.kvs().first().map(|kv| {
            let mut holder: Holder =
                serde_json::from_slice(kv.value()).unwrap_or_else(|_| Holder::unknown());
            holder.lease = Some(kv.lease());
            holder
        }))
    }

    /// Waits until `holder`'s lease runs out or it releases the plan's lock, for at most
    /// the lease's TTL and a second: a holder still there after that keeps its lease alive,
    /// so it runs. True when the lock is free.
    pub fn wait_out(&self, holder: &Holder) -> anyhow::Result<bool> {
        let granted = holder
            .lease
            .and_then(|lease| {
                self.request(move |mut client| async move {
                    client.lease_time_to_live(lease, None).await
                })
                .ok()
            })
            .and_then(|answer| u64::try_from(answer.granted_ttl()).ok())
            .map_or(self.ttl, Duration::from_secs);
        let deadline = Instant::now() + granted + Duration::from_secs(1);
        loop {
            match self.plan_holder()? {
                None => return Ok(true),
                Some(now) if now.lease != holder.lease => return Ok(false),
                Some(_) if Instant::now() >= deadline => return Ok(false),
                Some(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// The id of the last rollout's journal, if any.
    fn current(&self) -> anyhow::Result<Option<String>> {
        let key = format!("{}/current", self.base);
        let response = self.read(key, (false, false), "the journal")?;
        Ok(response
            .kvs()
            .first()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
    }

    /// The records of the journal `id`, in order (values that are not records: torn).
    fn records(&self, id: &str) -> anyhow::Result<Story> {
        let prefix = format!("{}{id}/", self.journals());
        let response = self.read(prefix, (true, false), "the journal")?;
        let mut story = Story::default();
        for kv in response.kvs() {
            match serde_json::from_slice(kv.value()) {
                Ok(record) => story.records.push(record),
                Err(_) => {
                    story.torn = Some(Torn {
                        text: String::from_utf8_lossy(kv.value()).into_owned(),
                    })
                }
            }
        }
        Ok(story)
    }

    pub fn story(&self) -> anyhow::Result<Story> {
        match self.current()? {
            None => Ok(Story::default()),
            Some(id) => self.records(&id),
        }
    }

    /// Every journal's id, oldest first.
    fn journal_ids(&self) -> anyhow::Result<Vec<String>> {
        let response = self.read(self.journals(), (true, true), "the history")?;
        let journals = self.journals();
        let mut ids: Vec<String> = response
            .kvs()
            .iter()
            .filter_map(|kv| {
                let key = String::from_utf8_lossy(kv.key());
                let rest = key.strip_prefix(&journals)?;
                rest.split_once('/').map(|(id, _)| id.to_owned())
            })
            .collect();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    pub fn history(&self) -> anyhow::Result<Vec<Past>> {
        let mut ids = self.journal_ids()?;
        ids.reverse();
        Ok(ids
            .iter()
            .filter_map(|id| {
                let story = self.records(id).ok()?;
                past_of(
                    story.records,
                    format!("etcd:{}{id}", self.journals()).into(),
                )
            })
            .collect())
    }

    /// The journal to append to, fenced by the plan's lock (which the caller holds).
    pub fn journal(self: &Arc<Self>, continuing: bool) -> anyhow::Result<SharedJournal> {
        let lease = self
            .lease()
            .map_err(|error| anyhow::anyhow!("etcd: {}", deepest(&error)))?;
        let existing = self.current()?;
        let (id, next) = match existing {
            Some(id) if continuing => {
                let next = self.last_seq(&id)?.map_or(0, |last| last + 1);
                (id, next)
            }
            _ => {
                let id = crate::journal::now();
                let mut journal = SharedJournal {
                    shared: Arc::clone(self),
                    id: id.clone(),
                    next: 0,
                    lease,
                };
                journal.fenced(vec![TxnOp::put(
                    format!("{}/current", self.base),
                    id.clone(),
                    None,
                )])?;
                self.prune(&id);
                (id, 0)
            }
        };
        Ok(SharedJournal {
            shared: Arc::clone(self),
            id,
            next,
            lease,
        })
    }

    /// The number of the journal's last record.
    fn last_seq(&self, id: &str) -> anyhow::Result<Option<u64>> {
        let prefix = format!("{}{id}/", self.journals());
        let response = self.read(prefix, (true, true), "the journal")?;
        Ok(response
            .kvs()
            .iter()
            .filter_map(|kv| {
                String::from_utf8_lossy(kv.key())
                    .rsplit('/')
                    .next()
                    .and_then(|seq| seq.parse().ok())
            })
            .max())
    }

    /// Keeps the newest `KEEP` journals (the new one among them).
    fn prune(&self, new: &str) {
        let Ok(mut ids) = self.journal_ids() else {
            return;
        };
        if !ids.iter().any(|id| id == new) {
            ids.push(new.to_owned());
            ids.sort();
        }
        let excess = ids.len().saturating_sub(KEEP);
        for old in ids.into_iter().take(excess) {
            let prefix = format!("{}{old}/", self.journals());
            let deleted = self.request(move |mut client| {
                let prefix = prefix.clone();
                let options = etcd_client::DeleteOptions::new().with_prefix();
                async move { client.delete(prefix, Some(options)).await }
            });
            if let Err(error) = deleted {
                tracing::debug!("cannot prune an old journal from etcd: {error}");
            }
        }
    }

    pub fn request_abort(&self, from: &str, now: bool) -> anyhow::Result<()> {
        let key = self.abort_key();
        let request = serde_json::json!({"from": from, "now": now}).to_string();
        self.request(move |mut client| {
            let (key, request) = (key.clone(), request.clone());
            async move { client.put(key, request, None).await }
        })
        .map_err(|error| {
            anyhow::anyhow!(
                "cannot write the abort request to etcd: {}",
                deepest(&error)
            )
        })?;
        Ok(())
    }

    /// Removes a request left for an earlier holder; one written since this command took
    /// the plan's lock (an `abort` while it was still in pre-flight) stays, for the watch.
    pub fn clear_request(&self) {
        let key = self.abort_key();
        let since = self.locked_at();
        let deleted = self.request(move |mut client| {
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    key.clone(),
                    CompareOp::Less,
                    since.saturating_add(1),
                )])
                .and_then([TxnOp::delete(key.clone(), None)]);
            async move { client.txn(txn).await }
        });
        if let Err(error) = deleted {
            tracing::debug!("cannot clear the abort request in etcd: {error}");
        }
    }

    /// The revision at which this command took the plan's lock (`i64::MAX` if it holds
    /// none: every request is older).
    fn locked_at(&self) -> i64 {
        self.locked_at
            .lock()
            .expect("the revision lock")
            .unwrap_or(i64::MAX)
    }

    /// Watches the abort key while the command runs: a request from any machine reaches
    /// `deliver` (who asked, and whether `--now`) as soon as etcd tells.
    pub fn watch_aborts(&self, deliver: super::AbortSink) {
        let client = self.client.clone();
        let key = self.abort_key();
        let since = self.locked_at();
        // A request written during pre-flight is delivered before this returns, so the
        // rollout stops before its first server rather than a moment after it started.
        match self.read(key.clone(), (false, false), "the abort request") {
            Ok(response) => {
                for kv in response.kvs().iter().filter(|kv| kv.mod_revision() > since) {
                    deliver_request(kv.value(), &deliver);
                }
            }
            Err(error) => tracing::debug!("{error:#}; the watch delivers it"),
        }
        self.handle().spawn(async move {
            loop {
                if let Err(error) = watch_once(client.clone(), &key, since, &deliver).await {
                    tracing::debug!("the abort watch ended ({error}); watching again");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Releases every lock at once, rather than when the lease runs out.
        if let Some(lease) = *self
            .lease
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
        {
            let revoked =
                self.request(move |mut client| async move { client.lease_revoke(lease).await });
            if revoked.is_err() {
                tracing::debug!("cannot revoke the lease: the locks go when it runs out");
            }
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A lock held on etcd: its key is deleted when dropped (if it is still ours).
pub struct SharedLock {
    client: Client,
    handle: tokio::runtime::Handle,
    key: String,
    lease: i64,
}

impl Drop for SharedLock {
    fn drop(&mut self) {
        let client = self.client.clone();
        let txn = Txn::new()
            .when([Compare::lease(
                self.key.clone(),
                CompareOp::Equal,
                self.lease,
            )])
            .and_then([TxnOp::delete(self.key.clone(), None)]);
        let task = self.handle.spawn(async move {
            retrying(Duration::from_secs(2), || {
                let (mut client, txn) = (client.clone(), txn.clone());
                async move { client.txn(txn).await }
            })
            .await
        });
        if !matches!(futures::executor::block_on(task), Ok(Ok(_))) {
            tracing::debug!("cannot release a lock in etcd: it goes when the lease runs out");
        }
    }
}
