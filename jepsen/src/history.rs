//! The recorded history: every client operation as invoke / ok / fail /
//! info, and every nemesis action, with monotonic timestamps. Written as
//! `history.jsonl` (one `Event` per line) and read back by the checkers.
//! `jepsen/CONTRACT.md` says what each type means for each operation.

use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// invoke: the client sent it. ok: it happened (committed). fail: it
/// certainly did not happen. info: unknown (a timeout, a lost connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Invoke,
    Ok,
    Fail,
    Info,
}

/// What an operation was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum F {
    Authorize,
    Publish,
    Activate,
    ReadPolicy,
    /// Nemesis: a fault installed, healed, skipped or indeterminate.
    Nemesis,
}

/// One line of `history.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Nanoseconds since the run started (monotonic clock).
    pub time_ns: u64,
    /// Client number; `u64::MAX` for the nemesis.
    pub process: u64,
    #[serde(rename = "type")]
    pub kind: Kind,
    pub f: F,
    /// The node the operation was sent to (1-based), 0 if none.
    pub node: u64,
    /// The operation's arguments (invoke) or result (ok/fail/info).
    pub value: serde_json::Value,
}

pub const NEMESIS_PROCESS: u64 = u64::MAX;

/// Events in memory, and the file they are also written to.
type Sink = (Vec<Event>, Option<std::io::BufWriter<std::fs::File>>);

/// Appends events to memory and to `history.jsonl` as they happen, so a
/// crashed run still leaves its history behind.
#[derive(Clone)]
pub struct Recorder {
    start: Instant,
    inner: Arc<Mutex<Sink>>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").finish_non_exhaustive()
    }
}

impl Recorder {
    pub fn new(file: Option<std::fs::File>) -> Recorder {
        Recorder {
            start: Instant::now(),
            inner: Arc::new(Mutex::new((Vec::new(), file.map(std::io::BufWriter::new)))),
        }
    }

    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    pub fn record(&self, process: u64, kind: Kind, f: F, node: u64, value: serde_json::Value) {
        let e = Event {
            time_ns: self.now_ns(),
            process,
            kind,
            f,
            node,
            value,
        };
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = g.1.as_mut()
            && let Ok(line) = serde_json::to_string(&e)
        {
            let _ = writeln!(w, "{line}");
        }
        g.0.push(e);
    }

    /// Everything recorded so far, flushing the file.
    pub fn events(&self) -> Vec<Event> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = g.1.as_mut() {
            let _ = w.flush();
        }
        g.0.clone()
    }
}

/// A completed client operation: its invocation paired with its outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Op {
    pub process: u64,
    pub f: F,
    pub node: u64,
    pub invoke_ns: u64,
    /// `None` when the history ended before an outcome was recorded.
    pub complete_ns: Option<u64>,
    pub kind: Kind,
    pub input: serde_json::Value,
    pub output: serde_json::Value,
}

/// Pairs each invoke with the next event of the same process.
pub fn pair(events: &[Event]) -> Vec<Op> {
    let mut open: std::collections::HashMap<u64, usize> = Default::default();
    let mut ops: Vec<Op> = Vec::new();
    for e in events {
        if e.process == NEMESIS_PROCESS {
            continue;
        }
        match e.kind {
            Kind::Invoke => {
                open.insert(e.process, ops.len());
                ops.push(Op {
                    process: e.process,
                    f: e.f,
                    node: e.node,
                    invoke_ns: e.time_ns,
                    complete_ns: None,
                    kind: Kind::Info,
                    input: e.value.clone(),
                    output: serde_json::Value::Null,
                });
            }
            k => {
                if let Some(i) = open.remove(&e.process) {
                    let op = &mut ops[i];
                    op.complete_ns = Some(e.time_ns);
                    op.kind = k;
                    op.output = e.value.clone();
                }
            }
        }
    }
    ops
}
