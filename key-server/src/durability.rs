//! Group commit: a request that wrote to the database waits until a flush that began after its
//! write has reached the disk, and one flush covers every request waiting at that moment.
//!
//! A single thread calls sled's blocking `flush`; requests take a ticket after writing and wait
//! for the flushed mark to pass it. (sled 0.34's `flush_async` deadlocks when called
//! concurrently, so it is not used.)

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::locks::lock;

/// How far flushing has got.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Progress {
    /// Every ticket up to this one is on disk.
    flushed: u64,
    /// Every ticket above `flushed` and up to this one saw its flush fail.
    failed: u64,
}

#[derive(Debug, Default)]
struct Requests {
    issued: u64,
    stopping: bool,
}

#[derive(Debug)]
struct Shared {
    requests: Mutex<Requests>,
    wake: Condvar,
}

/// The handle requests wait on; dropping the last one stops the flushing thread.
#[derive(Debug)]
pub struct GroupCommit {
    shared: Arc<Shared>,
    progress: watch::Receiver<Progress>,
}

impl GroupCommit {
    /// Starts the flushing thread for `db`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the thread cannot start.
    pub fn start(db: sled::Db) -> Result<Self> {
        let shared = Arc::new(Shared {
            requests: Mutex::default(),
            wake: Condvar::new(),
        });
        let (report, progress) = watch::channel(Progress::default());
        let flusher = shared.clone();
        std::thread::Builder::new()
            .name("group-commit".to_owned())
            .spawn(move || flush_loop(&db, &flusher, &report))?;
        Ok(Self { shared, progress })
    }

    /// Waits until everything written before this call is on disk.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`]-like failure reported as [`Error::Corrupt`] when the flush failed.
    pub async fn durable(&self) -> Result<()> {
        let ticket = {
            let mut requests = self.lock();
            requests.issued += 1;
            requests.issued
        };
        self.shared.wake.notify_one();

        let mut progress = self.progress.clone();
        let outcome = progress
            .wait_for(|progress| progress.flushed >= ticket || progress.failed >= ticket)
            .await
            .map_err(|_| Error::Corrupt("flushing stopped"))?;
        if outcome.flushed >= ticket {
            Ok(())
        } else {
            Err(Error::Corrupt("flushing to disk failed"))
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Requests> {
        lock(&self.shared.requests)
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        self.lock().stopping = true;
        self.shared.wake.notify_one();
    }
}

/// Flushes whenever tickets are waiting; each flush covers every ticket issued before it began.
fn flush_loop(db: &sled::Db, shared: &Shared, report: &watch::Sender<Progress>) {
    let mut done = 0u64;
    loop {
        let target = {
            let mut requests = lock(&shared.requests);
            while requests.issued == done && !requests.stopping {
                requests = shared
                    .wake
                    .wait_timeout(requests, Duration::from_secs(1))
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            if requests.issued == done {
                return;
            }
            requests.issued
        };
        match db.flush() {
            Ok(_) => report.send_modify(|progress| progress.flushed = target),
            Err(error) => {
                tracing::error!(%error, "flushing the key database failed");
                report.send_modify(|progress| progress.failed = target);
            }
        }
        done = target;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_concurrent_waiters_all_complete() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let commit = Arc::new(GroupCommit::start(db.clone()).unwrap());
        let mut tasks = Vec::new();
        for i in 0u32..200 {
            let (db, commit) = (db.clone(), commit.clone());
            tasks.push(tokio::spawn(async move {
                db.insert(i.to_be_bytes(), &[1]).unwrap();
                commit.durable().await
            }));
        }
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        assert_eq!(db.len(), 200);
    }
}
