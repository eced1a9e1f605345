//! The journal of the rollout under way on etcd: one key per record, each written only
//! while this process's lease holds the plan's lock.

use std::sync::Arc;

use etcd_client::{Compare, CompareOp, Txn, TxnOp};

use super::Shared;
use super::requests::{deepest, request_timeout, retrying};
use crate::journal::{Record, WriteError};

/// The journal of the rollout under way on etcd.
pub struct SharedJournal {
    pub(super) shared: Arc<Shared>,
    pub(super) id: String,
    pub(super) next: u64,
    pub(super) lease: i64,
}

impl SharedJournal {
    /// Makes `operations` only while this process's lease holds the plan's lock.
    pub(super) fn fenced(&mut self, operations: Vec<TxnOp>) -> Result<(), WriteError> {
        let shared = &self.shared;
        let txn = Txn::new()
            .when([Compare::lease(
                shared.lock_key(),
                CompareOp::Equal,
                self.lease,
            )])
            .and_then(operations);
        let timeout = request_timeout(shared.ttl);
        let client = shared.client.clone();
        // Made again while no member answers: a record written twice is the same key with
        // the same value.
        let answer = shared.call(async move {
            tokio::time::timeout(
                timeout,
                retrying(timeout, || {
                    let (mut client, txn) = (client.clone(), txn.clone());
                    async move { client.txn(txn).await }
                }),
            )
            .await
        });
        match answer {
            Ok(Ok(response)) if response.succeeded() => Ok(()),
            Ok(Ok(_)) => Err(WriteError::Fenced(format!(
                "etcd refused the journal write: this process no longer holds the lock {} (its lease ran out; another command may hold it now)",
                shared.lock_key()
            ))),
            Ok(Err(error)) => Err(WriteError::Fenced(format!(
                "etcd did not confirm the journal write: {}",
                deepest(&error)
            ))),
            Err(_) => Err(WriteError::Fenced(format!(
                "etcd did not confirm the journal write within {} (no quorum, or unreachable)",
                humantime::format_duration(timeout)
            ))),
        }
    }

    pub fn append(&mut self, record: &Record) -> Result<(), WriteError> {
        let value = serde_json::to_vec(record)
            .map_err(|error| WriteError::Io(std::io::Error::other(error)))?;
        let key = format!("{}{}/{:08}", self.shared.journals(), self.id, self.next);
        self.fenced(vec![TxnOp::put(key, value, None)])?;
        self.next += 1;
        Ok(())
    }
}
