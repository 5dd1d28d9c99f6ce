//! `quorate mcp-gate -- <server command>`: a governance point between an AI
//! agent and an MCP server (Model Context Protocol: JSON-RPC 2.0, one
//! message per line over stdio). The gate starts the server, relays every
//! message both ways unchanged, except that each `tools/call` from the
//! agent is first a governed decision:
//!
//! - principal: the agent identity the gate was started with;
//! - action `Action::"call"`, resource `Tool::"<tool name>"`;
//! - context: `{"arguments": <the call's arguments>, "server": <command>,
//!   "session": <session id>}`;
//! - request id `mcp-<session>-<JSON-RPC id>`, parent the session's own
//!   decision (`mcp-<session>`, action `Action::"session"` on
//!   `Server::"<command>"`, made before the server starts), trace id the
//!   session: the lineage explorer shows the agent's whole run.
//!
//! A call is forwarded only on a verified ALLOW (quorate-client). Anything
//! else, a DENY of any reason, containment, an error, a message the gate
//! cannot read, is answered to the agent as a JSON-RPC error with the
//! reason and the decision index, and the server never sees it
//! (docs/INTEGRATIONS.md, "AI agents (MCP)").

use std::process::{ExitCode, Stdio};
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use quorate_client::{Client, Outcome, Request, entity_uid};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::Mutex;

/// The JSON-RPC error code of a call quorate refused (in the range
/// JSON-RPC leaves to implementations).
pub(crate) const DENIED_CODE: i64 = -32001;
/// JSON-RPC's own codes.
const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;

/// The settings of one gate.
pub(crate) struct Gate {
    pub(crate) client: Client,
    pub(crate) domain: String,
    /// The agent's Cedar UID, e.g. `Agent::"claude-1"`.
    pub(crate) principal: String,
    pub(crate) command: Vec<String>,
}

/// What the gate does with one line from the agent.
#[derive(Debug, PartialEq)]
enum Verdict {
    /// Forward the line to the server unchanged.
    Forward,
    /// Do not forward; answer the agent with this message (if any).
    Answer(Option<Value>),
}

/// The JSON-RPC error for a refused message.
fn error(id: &Value, code: i64, message: String, data: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message, "data": data}})
}

/// Cedar has no null and no floating-point numbers: nulls are dropped and
/// floats become their decimal text, so any JSON arguments are a context
/// Cedar accepts (documented in docs/INTEGRATIONS.md).
pub(crate) fn cedar_value(v: &Value) -> Option<Value> {
    match v {
        Value::Null => None,
        Value::Number(n) if n.is_f64() => Some(json!(n.to_string())),
        Value::Array(a) => Some(Value::Array(a.iter().filter_map(cedar_value).collect())),
        Value::Object(o) => Some(Value::Object(
            o.iter()
                .filter_map(|(k, v)| cedar_value(v).map(|v| (k.clone(), v)))
                .collect(),
        )),
        other => Some(other.clone()),
    }
}

/// The id a JSON-RPC id takes in a request id: numbers and strings as
/// written.
fn id_text(id: &Value) -> Option<String> {
    match id {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl Gate {
    fn server_name(&self) -> String {
        let first = self.command.first().map(String::as_str).unwrap_or("");
        std::path::Path::new(first)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(first)
            .to_string()
    }

    /// The session's own decision: may this agent use this server at all?
    /// Every call of the session descends from it.
    async fn open_session(&self, session: &str) -> anyhow::Result<u64> {
        let req = Request::new(
            &self.domain,
            &self.principal,
            entity_uid("Action", "session"),
            entity_uid("Server", &self.server_name()),
        )
        .context(json!({"command": self.command.join(" "), "session": session}))
        .request_id(format!("mcp-{session}"))
        .trace_id(session);
        match self.client.authorize(req).await {
            Ok(Outcome::Allow(a)) => Ok(a.record.index),
            Ok(Outcome::Deny(d)) => bail!(
                "quorate refused this session: DENY {} ({}); the policy of domain {:?} must \
                 permit {} to Action::\"session\" on Server::{:?}",
                d.reason,
                d.message,
                self.domain,
                self.principal,
                self.server_name()
            ),
            Err(e) => bail!("quorate could not decide whether the session may start: {e}"),
        }
    }

    /// The verdict on one line from the agent.
    async fn judge(&self, session: &str, line: &str) -> Verdict {
        let msg: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            // What the gate cannot read could hide a call: never forwarded.
            Err(e) => {
                return Verdict::Answer(Some(error(
                    &Value::Null,
                    PARSE_ERROR,
                    format!("quorate mcp-gate: not JSON ({e}); nothing was forwarded"),
                    json!({}),
                )));
            }
        };
        if let Value::Array(batch) = &msg {
            if batch.iter().any(|m| m["method"] == "tools/call") {
                // One decision per call needs one message per call.
                let answers: Vec<Value> = batch
                    .iter()
                    .filter(|m| !m["id"].is_null())
                    .map(|m| {
                        error(
                            &m["id"],
                            INVALID_REQUEST,
                            "quorate mcp-gate: a batch holding tools/call is not forwarded; \
                             send each call as its own message"
                                .into(),
                            json!({}),
                        )
                    })
                    .collect();
                return Verdict::Answer((!answers.is_empty()).then_some(Value::Array(answers)));
            }
            return Verdict::Forward;
        }
        if msg["method"] != "tools/call" {
            return Verdict::Forward;
        }
        let id = msg["id"].clone();
        let Some(id_s) = id_text(&id) else {
            // A call without an id is a notification: it cannot be
            // answered, so it cannot be governed; it is dropped.
            return Verdict::Answer(None);
        };
        let refuse = |reason: &str, message: String, index: Option<u64>, request_id: &str| {
            Verdict::Answer(Some(error(
                &id,
                DENIED_CODE,
                format!("quorate: DENY {reason}: {message}"),
                json!({"reason": reason, "decision_index": index, "request_id": request_id}),
            )))
        };
        let request_id = format!("mcp-{session}-{id_s}");
        let Some(tool) = msg["params"]["name"].as_str().filter(|t| !t.is_empty()) else {
            return refuse(
                "INVALID_REQUEST",
                "tools/call names no tool (params.name)".into(),
                None,
                &request_id,
            );
        };
        let arguments = match &msg["params"]["arguments"] {
            Value::Null => json!({}),
            v => cedar_value(v).unwrap_or_else(|| json!({})),
        };
        let req = Request::new(
            &self.domain,
            &self.principal,
            entity_uid("Action", "call"),
            entity_uid("Tool", tool),
        )
        .context(json!({"arguments": arguments, "server": self.server_name(), "session": session}))
        .request_id(&request_id)
        .parent(format!("mcp-{session}"))
        .trace_id(session);
        match self.client.authorize(req).await {
            Ok(Outcome::Allow(_)) => Verdict::Forward,
            Ok(Outcome::Deny(d)) => {
                refuse(&d.reason, d.message, d.record.map(|r| r.index), &request_id)
            }
            Err(e) => refuse("UNAVAILABLE", e.to_string(), None, &request_id),
        }
    }
}

async fn write_line(out: &Mutex<tokio::io::Stdout>, v: &Value) -> std::io::Result<()> {
    let mut line = v.to_string();
    line.push('\n');
    let mut o = out.lock().await;
    o.write_all(line.as_bytes()).await?;
    o.flush().await
}

/// Runs the gate until the agent closes its side or the server exits.
pub(crate) async fn run(gate: Gate) -> anyhow::Result<ExitCode> {
    let Some((program, args)) = gate.command.split_first() else {
        bail!("give the MCP server's command after --, e.g. quorate mcp-gate ... -- npx my-server");
    };
    let session = quorate_client::fresh_id();
    let index = gate.open_session(&session).await?;
    eprintln!(
        "quorate mcp-gate: session {session} (decision {index}); every tools/call is decided in \
         domain {:?} as {}",
        gate.domain, gate.principal
    );
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start the MCP server {program:?}"))?;
    let mut to_server = child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("no server stdin"))?;
    let from_server = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("no server stdout"))?;
    let out = Arc::new(Mutex::new(tokio::io::stdout()));

    // Server → agent: unchanged, line by line.
    let out2 = out.clone();
    let relay = tokio::spawn(async move {
        let mut lines = BufReader::new(from_server).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut o = out2.lock().await;
            if o.write_all(line.as_bytes()).await.is_err()
                || o.write_all(b"\n").await.is_err()
                || o.flush().await.is_err()
            {
                break;
            }
        }
    });

    // Agent → server: each line judged in order, so calls keep their order.
    let mut agent = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = agent.next_line() => {
                let Some(line) = line.context("reading the agent's messages")? else { break };
                if line.trim().is_empty() {
                    continue;
                }
                match gate.judge(&session, &line).await {
                    Verdict::Forward => {
                        to_server.write_all(line.as_bytes()).await.context("writing to the MCP server")?;
                        to_server.write_all(b"\n").await?;
                        to_server.flush().await?;
                    }
                    Verdict::Answer(Some(v)) => write_line(&out, &v).await?,
                    Verdict::Answer(None) => {}
                }
            }
            status = child.wait() => {
                let _ = relay.await;
                let code = status.ok().and_then(|s| s.code()).unwrap_or(1);
                eprintln!("quorate mcp-gate: the MCP server exited ({code})");
                return Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)));
            }
        }
    }
    // The agent is done: close the server's input and wait for it.
    drop(to_server);
    let status = child.wait().await.context("waiting for the MCP server")?;
    let _ = relay.await;
    Ok(ExitCode::from(
        u8::try_from(status.code().unwrap_or(1)).unwrap_or(1),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate() -> Gate {
        Gate {
            client: Client::builder(["127.0.0.1:1"])
                .insecure()
                .retry_for(std::time::Duration::ZERO)
                .build()
                .unwrap_or_else(|e| panic!("{e}")),
            domain: "agents".into(),
            principal: r#"Agent::"a1""#.into(),
            command: vec!["/usr/bin/my-server".into(), "--flag".into()],
        }
    }

    #[test]
    fn arguments_become_a_context_cedar_accepts() {
        let v =
            json!({"path": "/tmp/x", "n": 3, "ratio": 0.5, "none": null, "list": [1, null, 2.5]});
        assert_eq!(
            cedar_value(&v),
            Some(json!({"path": "/tmp/x", "n": 3, "ratio": "0.5", "list": [1, "2.5"]}))
        );
    }

    #[tokio::test]
    async fn what_is_not_a_call_passes_and_what_cannot_be_read_does_not() {
        let g = gate();
        for line in [
            r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
            r#"[{"jsonrpc":"2.0","id":3,"method":"tools/list"}]"#,
        ] {
            assert_eq!(g.judge("s", line).await, Verdict::Forward, "{line}");
        }
        let Verdict::Answer(Some(e)) = g.judge("s", "{not json").await else {
            panic!("unreadable input must be answered, not forwarded");
        };
        assert_eq!(e["error"]["code"], PARSE_ERROR);
        let batch = r#"[{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"x"}}]"#;
        let Verdict::Answer(Some(e)) = g.judge("s", batch).await else {
            panic!("a batched call must not be forwarded");
        };
        assert_eq!(e[0]["id"], 4);
        // A call without an id cannot be answered: dropped, never forwarded.
        let note = r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"x"}}"#;
        assert_eq!(g.judge("s", note).await, Verdict::Answer(None));
    }

    #[tokio::test]
    async fn a_call_no_node_can_decide_is_refused_with_a_reason() {
        let g = gate();
        let call = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"rm","arguments":{}}}"#;
        let Verdict::Answer(Some(e)) = g.judge("s", call).await else {
            panic!("an undecided call must not be forwarded");
        };
        assert_eq!(e["id"], 7);
        assert_eq!(e["error"]["code"], DENIED_CODE);
        assert_eq!(e["error"]["data"]["reason"], "UNAVAILABLE");
        assert_eq!(e["error"]["data"]["request_id"], "mcp-s-7");
        let nameless = r#"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{}}"#;
        let Verdict::Answer(Some(e)) = g.judge("s", nameless).await else {
            panic!("a call without a tool must not be forwarded");
        };
        assert_eq!(e["error"]["data"]["reason"], "INVALID_REQUEST");
    }
}
