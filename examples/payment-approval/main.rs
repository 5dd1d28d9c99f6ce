//! A payment approval flow, governed step by step with `quorate-client`:
//! alice initiates a payment, carol and dave approve it (erin tries too and
//! is refused: she is no approver), and the payments service executes it
//! once two approvals are in. Every approval and the execution name the
//! payment's request id as their parent, so the console's lineage explorer
//! draws the payment as one tree.
//!
//! Against `quorate dev` (policy `config/dev/payments.cedar` in domain
//! "payments"), from the repository's root:
//!
//!     cargo run -p quorate-examples --bin payment-approval
//!
//! Options: `--endpoint a,b,c` (default the dev cluster's three nodes),
//! `--certs DIR` (default .quorate/dev/certs; the agent certificate is
//! used), `--amount N` (default 2500; above 10000 initiation is refused),
//! `--json` (one JSON summary on stdout instead of the narration).
//! Exit 0 when the payment executed, 1 when governance stopped it, 2 on
//! error.

use std::process::ExitCode;

use quorate_client::{Client, Outcome, Request, entity_uid, fresh_id};
use serde_json::json;

struct Args {
    endpoints: Vec<String>,
    certs: String,
    amount: u64,
    json: bool,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        endpoints: vec![
            "127.0.0.1:7101".into(),
            "127.0.0.1:7102".into(),
            "127.0.0.1:7103".into(),
        ],
        certs: ".quorate/dev/certs".into(),
        amount: 2500,
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--endpoint" => a.endpoints = value()?.split(',').map(str::to_string).collect(),
            "--certs" => a.certs = value()?,
            "--amount" => {
                a.amount = value()?
                    .parse()
                    .map_err(|_| "--amount takes a whole number".to_string())?
            }
            "--json" => a.json = true,
            "-h" | "--help" => {
                return Err("usage: payment-approval [--endpoint a,b,c] [--certs DIR] \
                            [--amount N] [--json]"
                    .into());
            }
            other => return Err(format!("unknown argument {other:?}; see --help")),
        }
    }
    Ok(a)
}

/// One step: its decision, narrated, and kept for the summary.
struct Flow {
    client: Client,
    payment: String,
    narrate: bool,
    steps: Vec<serde_json::Value>,
}

impl Flow {
    async fn step(
        &mut self,
        who: &str,
        action: &str,
        context: serde_json::Value,
        parent: Option<&str>,
        id: &str,
    ) -> Result<bool, quorate_client::Error> {
        let mut req = Request::new(
            "payments",
            who,
            entity_uid("Action", action),
            entity_uid("Payment", &self.payment),
        )
        .context(context)
        .request_id(id)
        .trace_id(&self.payment);
        if let Some(p) = parent {
            req = req.parent(p);
        }
        let outcome = self.client.authorize(req).await?;
        let (allow, index, reason) = match &outcome {
            Outcome::Allow(a) => (true, Some(a.record.index), String::new()),
            Outcome::Deny(d) => (false, d.record.as_ref().map(|r| r.index), d.reason.clone()),
        };
        if self.narrate {
            let verdict = if allow {
                "ALLOW (attested)".to_string()
            } else {
                format!("DENY {reason}")
            };
            let at = index.map(|i| format!("decision #{i}")).unwrap_or_default();
            println!("  {who:<22} {action:<9} → {verdict:<18} {at}");
        }
        self.steps.push(json!({
            "principal": who, "action": action, "request_id": id, "parent": parent,
            "decision": if allow { "ALLOW" } else { "DENY" }, "reason": reason, "index": index,
        }));
        Ok(allow)
    }
}

async fn run(a: Args) -> Result<bool, Box<dyn std::error::Error>> {
    let client = Client::builder(a.endpoints)
        .certs_dir(&a.certs, "agent")
        .map_err(|e| {
            format!("{e}; start the dev cluster first (`cargo xtask dev`) or give --certs DIR")
        })?
        .build()?;
    let payment = fresh_id().replace("rc-", "pay-");
    let mut flow = Flow {
        client,
        payment: payment.clone(),
        narrate: !a.json,
        steps: Vec::new(),
    };
    if flow.narrate {
        println!("Payment {payment} of {} EUR, step by step:", a.amount);
    }
    let root = format!("{payment}-initiate");
    let alice = entity_uid("User", "alice");
    let initiated = flow
        .step(
            &alice,
            "initiate",
            json!({"amount": a.amount, "currency": "EUR"}),
            None,
            &root,
        )
        .await?;
    let mut approvals = 0;
    if initiated {
        for who in ["carol", "erin", "dave"] {
            let id = format!("{payment}-approve-{who}");
            if flow
                .step(
                    &entity_uid("User", who),
                    "approve",
                    json!({}),
                    Some(&root),
                    &id,
                )
                .await?
            {
                approvals += 1;
            }
        }
    }
    let executed = initiated
        && flow
            .step(
                &entity_uid("Service", "payments"),
                "execute",
                json!({"approvals": approvals}),
                Some(&root),
                &format!("{payment}-execute"),
            )
            .await?;
    let root_index = flow.steps.first().and_then(|s| s["index"].as_u64());
    if a.json {
        println!(
            "{}",
            json!({"payment": payment, "executed": executed, "approvals": approvals,
                   "root_index": root_index, "steps": flow.steps})
        );
    } else {
        println!(
            "\n{}",
            if executed {
                "Executed: two approvals in, every step attested by a quorum."
            } else {
                "Not executed: governance stopped the payment."
            }
        );
        if let Some(i) = root_index {
            println!("See it as one tree: https://127.0.0.1:7201/#/lineage/{i}");
        }
    }
    Ok(executed)
}

#[tokio::main]
async fn main() -> ExitCode {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(a).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
