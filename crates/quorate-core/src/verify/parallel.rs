//! Re-evaluation on other threads, so that the Cedar half of `quorate
//! verify` scales across cores while the chain, Merkle and signature checks
//! stay one ordered pass.
//!
//! The verifier hands each record, once everything else about it has
//! verified, to a [`Pool`] in log order. The pool cuts them into batches and
//! deals the batches to worker threads, each with its own [`Reevaluator`]
//! (its own compiled-policy cache). What the caller sees is what the inline
//! verifier reports: **the first problem by line**. A worker's failure is
//! kept until every batch before it has come back, and a failure the
//! ordered pass finds later in the export loses to any re-evaluation
//! failure before it ([`Pool::drain`]). Memory is bounded: a worker holds
//! at most [`QUEUED_BATCHES`] batches, and submitting blocks when it is full.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use super::{PolicyAt, Problem, Reevaluator, VerifyError, first_difference};
use crate::record::{DecisionRecord, Digest, PolicyVersion};

/// Records per batch: enough to make a channel hop negligible beside
/// ~20 µs of Cedar per record, few enough that a failure is found soon.
const BATCH: usize = 256;
/// Batches queued per worker before `submit` waits.
pub const QUEUED_BATCHES: usize = 2;

/// Makes one worker's re-evaluator, on the worker's own thread.
pub type MakeReevaluator = Arc<dyn Fn() -> Box<dyn Reevaluator> + Send + Sync>;

/// The policy state of a record, owned so that it can cross threads; the
/// versions are shared, not copied per record.
#[derive(Clone)]
enum Policy {
    UnknownDomain,
    NoActiveVersion,
    Active(Arc<PolicyVersion>),
}

struct Job {
    line: u64,
    record: DecisionRecord,
    policy: Policy,
    candidate: Option<Arc<PolicyVersion>>,
}

/// What a worker reports for one batch: how many records it re-evaluated
/// and the first that disagreed.
struct Done {
    reevaluated: u64,
    failure: Option<VerifyError>,
}

/// Worker threads re-evaluating records in batches. See the module
/// documentation.
pub struct Pool {
    workers: Vec<SyncSender<Vec<Job>>>,
    handles: Vec<JoinHandle<()>>,
    done: Receiver<Done>,
    batch: Vec<Job>,
    batch_size: usize,
    next_seq: u64,
    outstanding: u64,
    reevaluated: u64,
    /// The earliest failure reported so far (by line).
    failure: Option<VerifyError>,
    /// One shared copy of each policy version seen, by identity.
    versions: HashMap<(String, u64, Digest), Arc<PolicyVersion>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("workers", &self.workers.len())
            .field("outstanding", &self.outstanding)
            .field("reevaluated", &self.reevaluated)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// `jobs` worker threads (at least one), each re-evaluating with its own
    /// `make()`.
    pub fn new(jobs: usize, make: MakeReevaluator) -> Pool {
        Pool::with_batch(jobs, BATCH, make)
    }

    /// As [`Pool::new`], with `batch` records per batch (tests use small
    /// batches to exercise the ordering).
    pub(crate) fn with_batch(jobs: usize, batch: usize, make: MakeReevaluator) -> Pool {
        let jobs = jobs.max(1);
        let (done_tx, done) = sync_channel::<Done>(jobs * (QUEUED_BATCHES + 1));
        let mut workers = Vec::with_capacity(jobs);
        let mut handles = Vec::with_capacity(jobs);
        for _ in 0..jobs {
            let (tx, rx) = sync_channel::<Vec<Job>>(QUEUED_BATCHES);
            let done_tx = done_tx.clone();
            let make = make.clone();
            handles.push(std::thread::spawn(move || work(rx, done_tx, make)));
            workers.push(tx);
        }
        Pool {
            workers,
            handles,
            done,
            batch: Vec::with_capacity(batch.max(1)),
            batch_size: batch.max(1),
            next_seq: 0,
            outstanding: 0,
            reevaluated: 0,
            failure: None,
            versions: HashMap::new(),
        }
    }

    /// Queues `record` (line `line` of the export) for re-evaluation under
    /// `policy` and `candidate`. Returns an earlier record's failure once
    /// one is known, so that the verifier can stop; the failure returned is
    /// then final only after [`Pool::drain`].
    pub(super) fn submit(
        &mut self,
        line: u64,
        record: DecisionRecord,
        policy: PolicyAt<'_>,
        candidate: Option<&PolicyVersion>,
    ) -> Result<(), VerifyError> {
        let policy = match policy {
            PolicyAt::UnknownDomain => Policy::UnknownDomain,
            PolicyAt::NoActiveVersion => Policy::NoActiveVersion,
            PolicyAt::Active(pv) => Policy::Active(self.shared(pv)),
        };
        let candidate = candidate.map(|pv| self.shared(pv));
        self.batch.push(Job {
            line,
            record,
            policy,
            candidate,
        });
        if self.batch.len() >= self.batch_size {
            self.dispatch();
        }
        self.collect_ready();
        match &self.failure {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Sends the pending batch and waits for every batch to come back.
    /// `Ok(n)`: all `n` records submitted re-evaluated to identical
    /// records; otherwise the failure with the lowest line.
    pub(super) fn drain(&mut self) -> Result<u64, VerifyError> {
        self.dispatch();
        while self.outstanding > 0 {
            match self.done.recv() {
                Ok(d) => self.absorb(d),
                // A worker died (a panic in Cedar): its batch never came
                // back, so nothing after it can be called verified.
                Err(_) => return Err(self.lost()),
            }
        }
        match &self.failure {
            Some(e) => Err(e.clone()),
            None => Ok(self.reevaluated),
        }
    }

    fn shared(&mut self, pv: &PolicyVersion) -> Arc<PolicyVersion> {
        self.versions
            .entry((pv.domain.clone(), pv.version, pv.hash))
            .or_insert_with(|| Arc::new(pv.clone()))
            .clone()
    }

    fn dispatch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let jobs = std::mem::replace(&mut self.batch, Vec::with_capacity(self.batch_size));
        let worker = (self.next_seq % self.workers.len() as u64) as usize;
        self.next_seq += 1;
        // Blocks while that worker has QUEUED_BATCHES waiting: the bound on
        // memory. Meanwhile finished batches are collected so that workers
        // never wait on a full `done` channel.
        let mut batch = jobs;
        loop {
            match self.workers[worker].try_send(batch) {
                Ok(()) => break,
                Err(std::sync::mpsc::TrySendError::Full(b)) => {
                    batch = b;
                    match self.done.recv() {
                        Ok(d) => self.absorb(d),
                        Err(_) => {
                            self.failure = Some(self.lost());
                            return;
                        }
                    }
                }
                Err(std::sync::mpsc::TrySendError::Disconnected(b)) => {
                    self.failure = Some(self.lost_at(b.first()));
                    return;
                }
            }
        }
        self.outstanding += 1;
    }

    fn collect_ready(&mut self) {
        while let Ok(d) = self.done.try_recv() {
            self.absorb(d);
        }
    }

    fn absorb(&mut self, d: Done) {
        self.outstanding -= 1;
        self.reevaluated += d.reevaluated;
        if let Some(f) = d.failure {
            let earlier = self.failure.as_ref().is_none_or(|e| f.line < e.line);
            if earlier {
                self.failure = Some(f);
            }
        }
    }

    fn lost(&self) -> VerifyError {
        self.lost_at(None)
    }

    fn lost_at(&self, job: Option<&Job>) -> VerifyError {
        VerifyError {
            line: job.map_or(0, |j| j.line),
            record: job.map(|j| j.record.index),
            problem: Box::new(Problem::ReevaluationStopped),
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Closing both ends stops every worker after the batch in hand: its
        // queue is closed, and its report can no longer be sent.
        self.workers.clear();
        drop(std::mem::replace(&mut self.done, sync_channel(1).1));
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

fn work(rx: Receiver<Vec<Job>>, done: SyncSender<Done>, make: MakeReevaluator) {
    // After a panic the re-evaluator's state is unknown: this batch and
    // every later one are reported as not verified (never as verified, and
    // never left unanswered, which would hang `drain`).
    let mut re = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| make())).ok();
    let mut broken = re.is_none();
    while let Ok(batch) = rx.recv() {
        let mut reevaluated = 0;
        let mut failure = None;
        for job in &batch {
            let at = |problem| VerifyError {
                line: job.line,
                record: Some(job.record.index),
                problem: Box::new(problem),
            };
            let Some(r) = re.as_mut().filter(|_| !broken) else {
                failure = Some(at(Problem::ReevaluationStopped));
                break;
            };
            let policy = match &job.policy {
                Policy::UnknownDomain => PolicyAt::UnknownDomain,
                Policy::NoActiveVersion => PolicyAt::NoActiveVersion,
                Policy::Active(pv) => PolicyAt::Active(pv.as_ref()),
            };
            let recomputed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                r.reevaluate(&job.record, policy, job.candidate.as_deref())
            }));
            let Ok(recomputed) = recomputed else {
                broken = true;
                failure = Some(at(Problem::ReevaluationStopped));
                break;
            };
            if let Some((field, recorded, recomputed)) = first_difference(&job.record, &recomputed)
            {
                failure = Some(at(Problem::Reevaluation {
                    field,
                    recorded,
                    recomputed,
                }));
                break;
            }
            reevaluated += 1;
        }
        if done
            .send(Done {
                reevaluated,
                failure,
            })
            .is_err()
        {
            return;
        }
    }
}
