//! A small driver for headless Chromium, for the web console's end-to-end
//! tests: launch a browser, open a page, navigate, evaluate JavaScript, wait
//! for the page to reach a state, take screenshots and read the page's
//! console.
//!
//! It speaks the Chrome DevTools Protocol (CDP) over a pipe
//! (`--remote-debugging-pipe`) rather than a WebSocket: Chromium reads
//! commands from its fd 3 and writes replies and events to its fd 4, each
//! message one JSON text terminated by a NUL byte. No port, no WebSocket
//! crate, nothing but `serde_json` and `anyhow`.
//!
//! The workspace forbids `unsafe`, so the pipes are not moved into place
//! with `pre_exec` + `dup2`. Instead Chromium is started through `/bin/sh`,
//! which receives our two pipes as its stdin and stdout, moves them to fds 3
//! and 4 (`exec 3<&0 4>&1`), points its own stdin at `/dev/null` and stdout
//! at stderr, and then `exec`s Chromium, which keeps the shell's pid. The
//! parent's ends of the pipes are close-on-exec (std creates every pipe with
//! `O_CLOEXEC`), so no other child inherits them.
//!
//! Pages use flattened sessions: `Target.createTarget` and
//! `Target.attachToTarget {flatten: true}` give a `sessionId` that page-level
//! commands carry at the top level of the message. A reader thread hands
//! each reply to the caller waiting for its `id` and keeps each page's
//! console messages, exceptions and log entries for diagnostics.
//!
//! Every command has a timeout ([`COMMAND_TIMEOUT`] unless stated), so a
//! hung browser fails the test with a message; if Chromium exits, the reader
//! sees end-of-file and every waiting call fails at once, quoting the last
//! lines Chromium wrote to stderr.
//!
//! ```ignore
//! # use std::{path::Path, time::Duration};
//! # use quorate_e2e::browser::Browser;
//! # fn main() -> anyhow::Result<()> {
//! let browser = Browser::launch(&["--ignore-certificate-errors"])?;
//! let page = browser.new_page(1280, 800)?;
//! page.navigate("https://127.0.0.1:8443/")?;
//! page.wait_for("document.querySelector('#status')", Duration::from_secs(10))?;
//! assert_eq!(page.eval("document.title")?, "quorate");
//! page.screenshot(Path::new("target/console.png"))?;
//! # Ok(())
//! # }
//! ```

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};

/// How long a single CDP command may take before the call fails.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// How long [`Page::navigate`] waits for the load event.
pub const NAVIGATION_TIMEOUT: Duration = Duration::from_secs(30);

/// The flags every launch passes, before the caller's extra ones.
pub const DEFAULT_FLAGS: &[&str] = &[
    "--headless=new",
    // We run as root in CI containers, where the sandbox cannot start.
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    // Keep the browser quiet and deterministic: no update checks, sync,
    // field trials or keyring prompts.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--mute-audio",
    "--password-store=basic",
    "--use-mock-keychain",
    "--hide-scrollbars",
    "--remote-debugging-pipe",
];

/// How many console entries a page keeps (the oldest are dropped).
const CONSOLE_LIMIT: usize = 1000;
/// How many of Chromium's stderr lines are kept for error messages.
const STDERR_LIMIT: usize = 30;
/// How long `Drop` gives Chromium to exit after `Browser.close`.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// How long `Drop` of a page waits for `Target.closeTarget`.
const PAGE_CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Where `find` looks, in order, after `$QUORATE_CHROMIUM`.
const CANDIDATES: &[&str] = &["chromium", "chromium-browser", "google-chrome"];

/// The shell snippet that moves stdin/stdout to fds 3/4 and runs Chromium
/// (`$0`) with the remaining arguments.
const SHELL_SHIM: &str = r#"exec 3<&0 4>&1 </dev/null 1>&2; exec "$0" "$@""#;

type Reply = Result<Value, String>;

/// A running headless Chromium. Dropping it closes the browser (killing it
/// if it does not exit within a few seconds), reaps the process and removes
/// its temporary profile directory.
pub struct Browser {
    shared: Arc<Shared>,
    child: Child,
    reader: Option<JoinHandle<()>>,
    user_data_dir: PathBuf,
    version: String,
}

/// One browser tab, attached through a flattened CDP session. Dropping it
/// closes the tab.
pub struct Page {
    shared: Arc<Shared>,
    session_id: String,
    target_id: String,
}

/// State shared by the callers, the reader thread and the stderr thread.
struct Shared {
    state: Mutex<State>,
    /// Signalled whenever an event is recorded or the connection closes.
    changed: Condvar,
    writer: Mutex<ChildStdin>,
    next_id: AtomicU64,
    stderr: Mutex<VecDeque<String>>,
    /// Set when Chromium's stderr reaches end-of-file.
    stderr_done: AtomicBool,
}

#[derive(Default)]
struct State {
    /// Callers waiting for the reply with this id.
    pending: HashMap<u64, Pending>,
    /// Why the connection ended, once it has.
    closed: Option<String>,
    /// Per-session event records, for the pages we opened.
    pages: HashMap<String, PageEvents>,
}

/// A caller waiting for a reply, and the session its command went to.
struct Pending {
    session: Option<String>,
    tx: mpsc::Sender<Reply>,
}

impl State {
    /// Records that a page can no longer be used and fails the calls
    /// waiting on its session: Chromium never answers them.
    fn mark_gone(&mut self, session: &str, why: &str) {
        let Some(page) = self.pages.get_mut(session) else {
            return;
        };
        page.gone.get_or_insert_with(|| why.to_owned());
        push_console(page, "gone", why.to_owned());
        let ids: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.session.as_deref() == Some(session))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(p) = self.pending.remove(&id) {
                let _ = p.tx.send(Err(why.to_owned()));
            }
        }
    }
}

#[derive(Default)]
struct PageEvents {
    console: VecDeque<ConsoleEntry>,
    loads: u64,
    /// Why the page can no longer be used (its renderer crashed, or its
    /// session was detached), once that happened.
    gone: Option<String>,
}

struct ConsoleEntry {
    level: String,
    text: String,
}

impl ConsoleEntry {
    fn is_error(&self) -> bool {
        matches!(
            self.level.as_str(),
            "error" | "assert" | "exception" | "gone"
        )
    }
}

impl fmt::Display for ConsoleEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.level, self.text)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// Sends one CDP command and waits up to `timeout` for its reply.
    fn call(
        &self,
        session: Option<&str>,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            msg["sessionId"] = Value::from(session);
        }
        let mut bytes = serde_json::to_vec(&msg).context("encoding a CDP command")?;
        bytes.push(0);

        let (tx, rx) = mpsc::channel();
        {
            let mut state = lock(&self.state);
            if let Some(why) = &state.closed {
                bail!("{method}: {why}{}", self.stderr_tail());
            }
            if let Some(why) = session
                .and_then(|s| state.pages.get(s))
                .and_then(|p| p.gone.as_ref())
            {
                bail!("{method}: {why}");
            }
            let session = session.map(str::to_owned);
            state.pending.insert(id, Pending { session, tx });
        }
        let written = {
            let mut w = lock(&self.writer);
            w.write_all(&bytes).and_then(|()| w.flush())
        };
        if let Err(e) = written {
            lock(&self.state).pending.remove(&id);
            bail!(
                "{method}: cannot write to Chromium's DevTools pipe: {e}{}",
                self.stderr_tail()
            );
        }
        match rx.recv_timeout(timeout) {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(e)) => Err(anyhow!("{method}: {e}{}", self.stderr_tail())),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                lock(&self.state).pending.remove(&id);
                bail!(
                    "{method}: no reply from Chromium within {timeout:?}{}",
                    self.stderr_tail()
                )
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!(
                "{method}: the connection to Chromium closed{}",
                self.stderr_tail()
            ),
        }
    }

    fn is_closed(&self) -> bool {
        lock(&self.state).closed.is_some()
    }

    /// Chromium's last stderr lines, formatted for the end of an error.
    fn stderr_tail(&self) -> String {
        let lines = lock(&self.stderr);
        if lines.is_empty() {
            return String::new();
        }
        let mut s = String::from("\nChromium's last stderr lines:");
        for line in lines.iter() {
            s.push_str("\n  ");
            s.push_str(line);
        }
        s
    }

    /// Handles one message from Chromium: a reply or an event.
    fn dispatch(&self, bytes: &[u8]) {
        let mut msg: Value = match serde_json::from_slice(bytes) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("browser: ignoring a CDP message that is not JSON: {e}");
                return;
            }
        };
        if let Some(id) = msg.get("id").and_then(Value::as_u64) {
            let reply = match msg.get("error") {
                Some(err) => Err(describe_protocol_error(err)),
                None => Ok(msg.get_mut("result").map(Value::take).unwrap_or_default()),
            };
            // A missing waiter timed out already; drop the reply.
            if let Some(p) = lock(&self.state).pending.remove(&id) {
                let _ = p.tx.send(reply);
            }
            return;
        }

        let method = msg.get("method").and_then(Value::as_str).unwrap_or("");
        let params = msg.get("params").unwrap_or(&Value::Null);
        let session = msg.get("sessionId").and_then(Value::as_str);
        let mut state = lock(&self.state);
        match (method, session) {
            // An event of the browser session about one of our pages.
            ("Target.detachedFromTarget", _) => {
                if let Some(s) = params.get("sessionId").and_then(Value::as_str) {
                    state.mark_gone(s, "the page's CDP session was detached");
                }
                drop(state);
                self.changed.notify_all();
                return;
            }
            ("Inspector.targetCrashed", Some(s)) => {
                state.mark_gone(s, "the page's renderer crashed");
                drop(state);
                self.changed.notify_all();
                return;
            }
            _ => {}
        }
        let Some(page) = session.and_then(|s| state.pages.get_mut(s)) else {
            return;
        };
        match method {
            "Runtime.consoleAPICalled" => {
                let level = params.get("type").and_then(Value::as_str).unwrap_or("log");
                let args = params.get("args").and_then(Value::as_array);
                let text = args
                    .map(|a| a.iter().map(describe_remote).collect::<Vec<_>>().join(" "))
                    .unwrap_or_default();
                push_console(page, level, text);
            }
            "Runtime.exceptionThrown" => {
                let details = params.get("exceptionDetails").unwrap_or(&Value::Null);
                push_console(page, "exception", describe_exception(details));
            }
            "Log.entryAdded" => {
                let entry = params.get("entry").unwrap_or(&Value::Null);
                let field = |k: &str| entry.get(k).and_then(Value::as_str).unwrap_or("");
                let mut text = format!("{}: {}", field("source"), field("text"));
                if !field("url").is_empty() {
                    text.push_str(&format!(" ({})", field("url")));
                }
                let level = match field("level") {
                    "" => "log",
                    l => l,
                };
                push_console(page, level, text);
            }
            "Page.loadEventFired" => page.loads += 1,
            _ => return,
        }
        drop(state);
        self.changed.notify_all();
    }
}

fn push_console(page: &mut PageEvents, level: &str, text: String) {
    if page.console.len() == CONSOLE_LIMIT {
        page.console.pop_front();
    }
    page.console.push_back(ConsoleEntry {
        level: level.to_owned(),
        text,
    });
}

fn describe_protocol_error(err: &Value) -> String {
    let message = err
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("unknown error");
    let mut s = match err.get("code") {
        Some(code) => format!("CDP error {code}: {message}"),
        None => format!("CDP error: {message}"),
    };
    if let Some(data) = err.get("data") {
        s.push_str(&format!(
            " ({})",
            data.as_str().unwrap_or(&data.to_string())
        ));
    }
    s
}

/// A short text for a `Runtime.RemoteObject` (a console argument):
/// primitives as their value, objects from their preview when there is one.
fn describe_remote(obj: &Value) -> String {
    if let Some(v) = obj.get("value") {
        return match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
    }
    if let Some(preview) = obj.get("preview").and_then(describe_preview) {
        return preview;
    }
    ["unserializableValue", "description", "type"]
        .iter()
        .find_map(|k| obj.get(*k).and_then(Value::as_str))
        .unwrap_or("?")
        .to_owned()
}

/// `{a: 1, b: "x"}` or `[1, 2]` from a `Runtime.ObjectPreview`, for plain
/// objects and arrays only.
fn describe_preview(preview: &Value) -> Option<String> {
    let str_of = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let subtype = str_of(preview, "subtype");
    let description = str_of(preview, "description");
    let is_array = subtype.as_deref() == Some("array");
    if !(is_array || (subtype.is_none() && description.as_deref() == Some("Object"))) {
        return None;
    }
    let props = preview.get("properties")?.as_array()?;
    let mut parts: Vec<String> = props
        .iter()
        .map(|p| {
            let value = str_of(p, "value").unwrap_or_default();
            let value = if str_of(p, "type").as_deref() == Some("string") {
                format!("{value:?}")
            } else {
                value
            };
            match (is_array, str_of(p, "name")) {
                (false, Some(name)) => format!("{name}: {value}"),
                _ => value,
            }
        })
        .collect();
    if preview.get("overflow").and_then(Value::as_bool) == Some(true) {
        parts.push("…".to_owned());
    }
    let (open, close) = if is_array { ("[", "]") } else { ("{", "}") };
    Some(format!("{open}{}{close}", parts.join(", ")))
}

/// The text of a `Runtime.ExceptionDetails`: "Uncaught Error: boom\n at …".
fn describe_exception(details: &Value) -> String {
    let text = details
        .get("text")
        .and_then(Value::as_str)
        .unwrap_or("exception");
    let mut s = match details.get("exception").map(describe_remote) {
        // "Uncaught (in promise) TypeError: nope" already names the error;
        // add only the stack that follows in the description.
        Some(desc) => {
            let first = desc.lines().next().unwrap_or_default();
            if !first.is_empty() && text.ends_with(first) {
                format!("{text}{}", &desc[first.len()..])
            } else {
                format!("{text} {desc}")
            }
        }
        None => text.to_owned(),
    };
    if let Some(url) = details.get("url").and_then(Value::as_str) {
        let line = details.get("lineNumber").and_then(Value::as_u64);
        let col = details.get("columnNumber").and_then(Value::as_u64);
        // CDP's line and column numbers are zero-based.
        if let (Some(line), Some(col), false) = (line, col, s.contains(url)) {
            s.push_str(&format!(" (at {url}:{}:{})", line + 1, col + 1));
        }
    }
    s
}

/// The value of a `Runtime.RemoteObject` returned with `returnByValue`.
fn remote_value(mut obj: Value) -> Value {
    if let Some(v) = obj.get_mut("value") {
        return v.take();
    }
    match obj.get("unserializableValue").and_then(Value::as_str) {
        // NaN, Infinity, -0, 1n: no JSON for these, so their JS text.
        Some(u) => Value::from(u),
        None => Value::Null,
    }
}

/// JavaScript's truthiness of a `Runtime.RemoteObject`.
fn truthy(obj: &Value) -> bool {
    if let Some(u) = obj.get("unserializableValue").and_then(Value::as_str) {
        return !matches!(u, "NaN" | "-0" | "0n");
    }
    match obj.get("value") {
        Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(_) | Value::Object(_)) => true,
        // No value: undefined, or an object that has no JSON form.
        None => {
            let kind = obj.get("type").and_then(Value::as_str);
            let subtype = obj.get("subtype").and_then(Value::as_str);
            !matches!(kind, Some("undefined") | None) && subtype != Some("null")
        }
    }
}

/// Reads NUL-terminated messages until end-of-file, then fails every
/// waiting call.
fn read_loop(shared: Arc<Shared>, out: ChildStdout) {
    let mut reader = BufReader::with_capacity(1 << 16, out);
    let mut buf = Vec::new();
    let why = loop {
        buf.clear();
        match reader.read_until(0, &mut buf) {
            Ok(0) => break "Chromium closed the DevTools pipe (did it exit?)".to_owned(),
            Ok(_) => {
                if buf.pop() != Some(0) {
                    break "Chromium closed the DevTools pipe in the middle of a message"
                        .to_owned();
                }
                shared.dispatch(&buf);
            }
            Err(e) => break format!("reading Chromium's DevTools pipe: {e}"),
        }
    };
    // Give the stderr thread a moment to collect Chromium's last words, so
    // that the errors below can quote them.
    let until = Instant::now() + Duration::from_millis(500);
    while !shared.stderr_done.load(Ordering::Acquire) && Instant::now() < until {
        thread::sleep(Duration::from_millis(10));
    }
    let mut state = lock(&shared.state);
    state.closed = Some(why.clone());
    for (_, p) in state.pending.drain() {
        let _ = p.tx.send(Err(why.clone()));
    }
    drop(state);
    shared.changed.notify_all();
}

/// Keeps the last lines of Chromium's stderr. It must keep draining the
/// pipe whatever it reads, or Chromium would block writing to it.
fn stderr_loop(shared: Arc<Shared>, err: impl Read) {
    let mut reader = BufReader::new(err);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf).trim_end().to_owned();
                if line.is_empty() || is_noise(&line) {
                    continue;
                }
                let mut lines = lock(&shared.stderr);
                if lines.len() == STDERR_LIMIT {
                    lines.pop_front();
                }
                lines.push_back(line);
            }
        }
    }
    shared.stderr_done.store(true, Ordering::Release);
}

/// Stderr lines Chromium prints on every start in a container, which would
/// crowd the useful ones out of error messages: it finds no D-Bus, and
/// Debian's `/usr/bin/chromium` wrapper trips over its own shared-memory
/// check (`[: …: unexpected operator`).
fn is_noise(line: &str) -> bool {
    line.contains(":ERROR:dbus/")
        || line.contains("/cpufreq/")
        || line.ends_with("unexpected operator")
}

/// An executable file called `name` on `$PATH`.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A fresh, empty directory for Chromium's profile.
fn make_user_data_dir() -> anyhow::Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let base = std::env::temp_dir();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    for _ in 0..100 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!(
            "quorate-chromium-{}-{n}-{nanos:x}",
            std::process::id()
        ));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(e).with_context(|| format!("creating {}", dir.display()));
            }
        }
    }
    bail!(
        "cannot create a fresh profile directory in {}",
        base.display()
    )
}

impl Browser {
    /// Finds Chromium: `$QUORATE_CHROMIUM` (a path, or a name looked up on
    /// `PATH`), else `chromium`, `chromium-browser` or `google-chrome` on
    /// `PATH`.
    pub fn find() -> anyhow::Result<PathBuf> {
        if let Some(var) = std::env::var_os("QUORATE_CHROMIUM") {
            let p = PathBuf::from(&var);
            // A bare name is looked up on PATH, like the candidates below.
            let found = match p.components().count() {
                1 => which(&p.to_string_lossy()),
                _ => None,
            };
            if let Some(found) = found {
                return Ok(found);
            }
            if is_executable(&p) {
                return Ok(p);
            }
            bail!(
                "$QUORATE_CHROMIUM is {}, which is not an executable file",
                p.display()
            );
        }
        CANDIDATES
            .iter()
            .find_map(|name| which(name))
            .ok_or_else(|| {
                anyhow!(
                    "no Chromium found: set $QUORATE_CHROMIUM to the browser's path or put \
                 one of {} on PATH (`cargo xtask test` installs Debian's chromium)",
                    CANDIDATES.join(", ")
                )
            })
    }

    /// Launches headless Chromium with [`DEFAULT_FLAGS`], a fresh temporary
    /// `--user-data-dir` and then `extra_args` (e.g.
    /// `--ignore-certificate-errors`), and waits until it answers on the
    /// DevTools pipe.
    pub fn launch(extra_args: &[&str]) -> anyhow::Result<Browser> {
        let exe = Self::find()?;
        let user_data_dir = make_user_data_dir()?;
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(SHELL_SHIM)
            .arg(&exe)
            .args(DEFAULT_FLAGS)
            .arg(format!("--user-data-dir={}", user_data_dir.display()))
            .args(extra_args)
            .arg("about:blank")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&user_data_dir);
                return Err(e).with_context(|| format!("starting {}", exe.display()));
            }
        };
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(&user_data_dir);
            bail!("starting {}: its pipes are missing", exe.display());
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            writer: Mutex::new(stdin),
            next_id: AtomicU64::new(1),
            stderr: Mutex::new(VecDeque::new()),
            stderr_done: AtomicBool::new(false),
        });
        let err_shared = Arc::clone(&shared);
        let stderr_thread = thread::Builder::new()
            .name("chromium-stderr".into())
            .spawn(move || stderr_loop(err_shared, stderr));
        let read_shared = Arc::clone(&shared);
        let reader = thread::Builder::new()
            .name("cdp-reader".into())
            .spawn(move || read_loop(read_shared, stdout));
        // From here on, Drop cleans up whatever goes wrong.
        let mut browser = Browser {
            shared,
            child,
            reader: None,
            user_data_dir,
            version: String::new(),
        };
        browser.reader = Some(reader.context("spawning the CDP reader thread")?);
        stderr_thread.context("spawning the stderr thread")?;

        let version = browser
            .call("Browser.getVersion", json!({}))
            .with_context(|| format!("{} did not answer on the DevTools pipe", exe.display()))?;
        browser.version = version
            .get("product")
            .and_then(Value::as_str)
            .unwrap_or("Chromium")
            .to_owned();
        Ok(browser)
    }

    /// The browser's product and version, e.g. `Chrome/156.0.8078.114`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The process id of Chromium (the browser process).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a browser-level CDP command (no session) and returns its result.
    pub fn call(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.shared.call(None, method, params, COMMAND_TIMEOUT)
    }

    /// Opens a new tab on `about:blank` with a `width`×`height` viewport
    /// (`Emulation.setDeviceMetricsOverride`, scale factor 1) and the
    /// `Runtime`, `Page` and `Log` domains enabled.
    pub fn new_page(&self, width: u32, height: u32) -> anyhow::Result<Page> {
        let target = self.call("Target.createTarget", json!({ "url": "about:blank" }))?;
        let target_id = target
            .get("targetId")
            .and_then(Value::as_str)
            .context("Target.createTarget: no targetId in the reply")?
            .to_owned();
        let attached = self.call(
            "Target.attachToTarget",
            json!({ "targetId": target_id, "flatten": true }),
        );
        let session_id = match attached.and_then(|a| {
            a.get("sessionId")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .context("Target.attachToTarget: no sessionId in the reply")
        }) {
            Ok(s) => s,
            Err(e) => {
                let _ = self.call("Target.closeTarget", json!({ "targetId": target_id }));
                return Err(e);
            }
        };
        lock(&self.shared.state)
            .pages
            .insert(session_id.clone(), PageEvents::default());
        // From here on, dropping the page closes the tab.
        let page = Page {
            shared: Arc::clone(&self.shared),
            session_id,
            target_id,
        };
        page.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
        )?;
        for domain in ["Page", "Runtime", "Log"] {
            page.call(&format!("{domain}.enable"), json!({}))?;
        }
        Ok(page)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let deadline = Instant::now() + CLOSE_GRACE;
        if !self.shared.is_closed() {
            let _ = self
                .shared
                .call(None, "Browser.close", json!({}), CLOSE_GRACE);
        }
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
            }
        }
        // The reader ends at end-of-file, which follows Chromium's exit
        // unless a stray helper process still holds the pipe; don't hang
        // on that.
        if let Some(reader) = self.reader.take() {
            let state = lock(&self.shared.state);
            let (state, _) = self
                .shared
                .changed
                .wait_timeout_while(state, Duration::from_secs(2), |s| s.closed.is_none())
                .unwrap_or_else(PoisonError::into_inner);
            let closed = state.closed.is_some();
            drop(state);
            if closed {
                let _ = reader.join();
            }
        }
        remove_profile(&self.user_data_dir);
    }
}

/// Removes Chromium's profile directory. Its helper processes (network
/// service, GPU process) can outlive the browser process by a moment and
/// still write there, so this retries for up to a second.
fn remove_profile(dir: &Path) {
    for _ in 0..20 {
        let _ = std::fs::remove_dir_all(dir);
        if !dir.exists() {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

impl fmt::Debug for Browser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Browser")
            .field("version", &self.version)
            .field("pid", &self.child.id())
            .field("user_data_dir", &self.user_data_dir)
            .finish_non_exhaustive()
    }
}

impl Page {
    /// Sends a CDP command to this page's session and returns its result:
    /// the escape hatch for whatever the helpers below do not cover.
    pub fn call(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.call_timeout(method, params, COMMAND_TIMEOUT)
    }

    fn call_timeout(
        &self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        self.shared
            .call(Some(&self.session_id), method, params, timeout)
    }

    /// Navigates to `url` and waits (up to [`NAVIGATION_TIMEOUT`]) for the
    /// load event. A navigation that fails (say, connection refused or a
    /// certificate error) is an `Err` with Chromium's error text.
    pub fn navigate(&self, url: &str) -> anyhow::Result<()> {
        let loads_before = self.events(|p| p.loads);
        let nav = self.call("Page.navigate", json!({ "url": url }))?;
        if let Some(err) = nav.get("errorText").and_then(Value::as_str) {
            bail!("navigating to {url}: {err}");
        }
        // Without a loaderId it was a same-document navigation (a fragment
        // change): there is no load event to wait for.
        if nav.get("loaderId").is_none() {
            return Ok(());
        }
        let deadline = Instant::now() + NAVIGATION_TIMEOUT;
        let mut state = lock(&self.shared.state);
        loop {
            if let Some(why) = &state.closed {
                bail!("navigating to {url}: {why}{}", self.shared.stderr_tail());
            }
            let Some(page) = state.pages.get(&self.session_id) else {
                bail!("navigating to {url}: the page is gone");
            };
            if let Some(why) = &page.gone {
                bail!("navigating to {url}: {why}{}", recent_errors(page));
            }
            if page.loads > loads_before {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                let errors = recent_errors(page);
                drop(state);
                let ready = self
                    .eval_timeout("document.readyState", Duration::from_secs(2))
                    .map_or_else(|e| format!("unknown ({e})"), |v| v.to_string());
                bail!(
                    "navigating to {url}: no load event within {NAVIGATION_TIMEOUT:?} \
                     (document.readyState is {ready}){errors}"
                );
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Evaluates `js` in the page (`Runtime.evaluate` with `awaitPromise`
    /// and `returnByValue`), so a promise is awaited and its result
    /// returned. `undefined` and values without a JSON form (DOM nodes,
    /// functions) come back as `null` or `{}`; `NaN`, `Infinity`, `-0` and
    /// BigInts as their JavaScript text. An exception thrown in the page,
    /// or a rejected promise, is an `Err` with the exception's description.
    pub fn eval(&self, js: &str) -> anyhow::Result<Value> {
        self.eval_timeout(js, COMMAND_TIMEOUT)
    }

    fn eval_timeout(&self, js: &str, timeout: Duration) -> anyhow::Result<Value> {
        self.evaluate(js, timeout).map(remote_value)
    }

    /// `Runtime.evaluate`: the result as a `Runtime.RemoteObject`.
    fn evaluate(&self, js: &str, timeout: Duration) -> anyhow::Result<Value> {
        let mut r = self.call_timeout(
            "Runtime.evaluate",
            json!({ "expression": js, "awaitPromise": true, "returnByValue": true }),
            timeout,
        )?;
        if let Some(details) = r.get("exceptionDetails") {
            bail!(
                "JavaScript `{}` threw: {}",
                abbreviate(js),
                describe_exception(details)
            );
        }
        Ok(r.get_mut("result").map(Value::take).unwrap_or_default())
    }

    /// Evaluates the expression `js` every 100 ms until its value is truthy
    /// and returns that value. Exceptions while polling count as "not yet".
    /// After `timeout`, an `Err` with the last value (or exception) and the
    /// page's recent console errors.
    pub fn wait_for(&self, js: &str, timeout: Duration) -> anyhow::Result<Value> {
        let deadline = Instant::now() + timeout;
        let mut last;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let budget = remaining.clamp(Duration::from_secs(1), COMMAND_TIMEOUT);
            match self.evaluate(js, budget) {
                Ok(obj) if truthy(&obj) => return Ok(remote_value(obj)),
                Ok(obj) if obj.get("type").and_then(Value::as_str) == Some("undefined") => {
                    last = "the last value was undefined".to_owned();
                }
                Ok(obj) => last = format!("the last value was {}", remote_value(obj)),
                Err(e) if self.shared.is_closed() => return Err(e),
                Err(e) if self.events(|p| p.gone.is_some()) => {
                    return Err(e.context(format!("waiting for `{}`", abbreviate(js))));
                }
                Err(e) => last = format!("the last attempt failed: {e:#}"),
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                let errors = self.events(recent_errors);
                bail!(
                    "timed out after {timeout:?} waiting for `{}`: {last}{errors}",
                    abbreviate(js)
                );
            }
            thread::sleep(remaining.min(Duration::from_millis(100)));
        }
    }

    /// Captures the viewport as a PNG (`Page.captureScreenshot`) and writes
    /// it to `path`.
    pub fn screenshot(&self, path: &Path) -> anyhow::Result<()> {
        let shot = self.call("Page.captureScreenshot", json!({ "format": "png" }))?;
        let data = shot
            .get("data")
            .and_then(Value::as_str)
            .context("Page.captureScreenshot: no data in the reply")?;
        let png = base64_decode(data).context("Page.captureScreenshot: bad base64")?;
        std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))
    }

    /// The console messages, uncaught exceptions and log entries this page
    /// produced so far (the last 1000), as `[level] text` lines.
    pub fn console(&self) -> Vec<String> {
        self.events(|p| p.console.iter().map(ToString::to_string).collect())
    }

    fn events<T: Default>(&self, f: impl FnOnce(&PageEvents) -> T) -> T {
        lock(&self.shared.state)
            .pages
            .get(&self.session_id)
            .map(f)
            .unwrap_or_default()
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        if !self.shared.is_closed() {
            let _ = self.shared.call(
                None,
                "Target.closeTarget",
                json!({ "targetId": self.target_id }),
                PAGE_CLOSE_GRACE,
            );
        }
        lock(&self.shared.state).pages.remove(&self.session_id);
    }
}

impl fmt::Debug for Page {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Page")
            .field("target_id", &self.target_id)
            .field("session_id", &self.session_id)
            .finish_non_exhaustive()
    }
}

/// The page's last console errors and exceptions, formatted for the end of
/// an error message.
fn recent_errors(page: &PageEvents) -> String {
    let errors: Vec<_> = page.console.iter().filter(|e| e.is_error()).collect();
    if errors.is_empty() {
        return "\n(no console errors on the page)".to_owned();
    }
    let mut s = String::from("\nrecent console errors on the page:");
    for e in errors.iter().skip(errors.len().saturating_sub(20)) {
        s.push_str(&format!("\n  {e}"));
    }
    s
}

/// `js` on one line and at most 120 characters, for error messages.
fn abbreviate(js: &str) -> String {
    let one_line = js.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(120) {
        Some((i, _)) => format!("{}…", &one_line[..i]),
        None => one_line,
    }
}

/// Decodes CDP's binary fields (standard base64, padded).
fn base64_decode(text: &str) -> anyhow::Result<Vec<u8>> {
    use base64::Engine;
    Ok(base64::engine::general_purpose::STANDARD.decode(text)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exceptions_read_like_the_devtools_console() {
        let thrown = json!({
            "text": "Uncaught",
            "exception": { "type": "object", "subtype": "error",
                           "description": "Error: boom\n    at <anonymous>:1:7" },
        });
        assert_eq!(
            describe_exception(&thrown),
            "Uncaught Error: boom\n    at <anonymous>:1:7"
        );
        let rejected = json!({
            "text": "Uncaught (in promise) TypeError: nope",
            "exception": { "type": "object", "description": "TypeError: nope\n    at x" },
            "url": "http://h/", "lineNumber": 0, "columnNumber": 4,
        });
        assert_eq!(
            describe_exception(&rejected),
            "Uncaught (in promise) TypeError: nope\n    at x (at http://h/:1:5)"
        );
        let thrown_string = json!({
            "text": "Uncaught", "exception": { "type": "string", "value": "oops" },
        });
        assert_eq!(describe_exception(&thrown_string), "Uncaught oops");
    }

    #[test]
    fn truthiness_follows_javascript() {
        let falsy = [
            json!({ "type": "object", "subtype": "null", "value": null }),
            json!({ "type": "undefined" }),
            json!({ "type": "boolean", "value": false }),
            json!({ "type": "number", "value": 0 }),
            json!({ "type": "number", "unserializableValue": "NaN" }),
            json!({ "type": "number", "unserializableValue": "-0" }),
            json!({ "type": "bigint", "unserializableValue": "0n" }),
            json!({ "type": "string", "value": "" }),
        ];
        for v in falsy {
            assert!(!truthy(&v), "{v}");
        }
        let truthy_ones = [
            json!({ "type": "boolean", "value": true }),
            json!({ "type": "number", "value": 0.5 }),
            json!({ "type": "number", "unserializableValue": "Infinity" }),
            json!({ "type": "string", "value": "0" }),
            json!({ "type": "object", "value": [] }),
            json!({ "type": "object", "subtype": "node", "value": {} }),
            json!({ "type": "function", "description": "() => 1" }),
        ];
        for v in truthy_ones {
            assert!(truthy(&v), "{v}");
        }
    }
}
