//! Unit tests of the node's seams, on real sockets (and one real node).

use super::authorize::{ForwardFailure, never_connected, send_forward};
use super::*;
use tokio::io::AsyncReadExt as _;

fn wire() -> quorate_proto::v1::AuthorizeRequest {
    quorate_proto::v1::AuthorizeRequest {
        domain: "d".into(),
        principal: r#"User::"a""#.into(),
        action: r#"Action::"r""#.into(),
        resource: r#"Doc::"1""#.into(),
        context_json: "{}".into(),
        entities_json: None,
        request_id: "x".into(),
        parent: None,
        trace_id: None,
    }
}

/// A leader held only in suspicion (its root unconfirmed past the
/// finality timeout) still persists the checkpoint that clears it. It
/// used to refuse, because checkpoints went through the same
/// containment gate as answers: the suspicion could then never clear,
/// and a cluster in which every node was suspected or unattested after
/// a long delay never served again (Jepsen membership,delay,duplicate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspected_leader_persists_the_checkpoint_that_clears_it() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let port = |()| {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let (g, h) = (port(()), port(()));
    let text = format!(
        "cluster_id = \"c\"\nnode_id = 1\ngrpc_addr = \"127.0.0.1:{g}\"\n\
         http_addr = \"127.0.0.1:{h}\"\n\
         members = [{{ id = 1, addr = \"127.0.0.1:{g}\" }}]\n\
         [checkpoint]\ninterval_ms = 2000\nfinality_timeout_ms = 2500\n"
    );
    let cfg: NodeConfig = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    let running = Node::start(cfg, dir.path())
        .await
        .unwrap_or_else(|e| panic!("start: {e}"));
    let node = running.node.clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while node
        .publish_policy(
            "docs".into(),
            "permit(principal, action, resource);".into(),
            None,
            true,
            None,
        )
        .await
        .is_err()
    {
        assert!(std::time::Instant::now() < deadline, "could not publish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ask = |id: &str| AuthorizeRequest {
        domain: "docs".into(),
        request_id: id.into(),
        principal: r#"User::"a""#.into(),
        action: r#"Action::"r""#.into(),
        resource: r#"Doc::"1""#.into(),
        context: "{}".into(),
        entities: None,
        parent: None,
        trace_id: None,
    };
    // A decision whose checkpoint is not final yet (checkpoints come
    // every 2 s), then the suspicion, as if it had waited far too long.
    let mut k = 0;
    let size = loop {
        k += 1;
        let a = node
            .authorize(ask(&format!("r{k}")), crate::node::Door::Grpc)
            .await
            .unwrap_or_else(|e| panic!("authorize: {e}"));
        assert_eq!(a.decision, quorate_core::Decision::Allow, "{a:?}");
        let size = a.record.as_ref().map_or(0, |r| r.index);
        if node.lookup().last_final() < size {
            break size;
        }
    };
    *node
        .inner
        .unconfirmed
        .lock()
        .unwrap_or_else(|p| p.into_inner()) =
        Some((size, std::time::Instant::now() - Duration::from_secs(3600)));
    assert_eq!(
        node.containment().map(|c| c.0),
        Some(DenyReason::Divergence),
        "the suspicion contains"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while node.lookup().last_final() < size
        || node.containment().map(|c| c.0) == Some(DenyReason::Divergence)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "still contained: {:?}; last final {}",
            node.containment(),
            node.lookup().last_final()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let a = node
        .authorize(ask("after"), crate::node::Door::Grpc)
        .await
        .unwrap_or_else(|e| panic!("authorize: {e}"));
    assert_eq!(a.decision, quorate_core::Decision::Allow, "{a:?}");
    drop(node);
    running.shutdown().await;
}

#[tokio::test]
async fn a_reset_after_sending_is_an_unknown_outcome_not_no_quorum() {
    // A "leader" that takes the connection and the request, then resets.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = l.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move {
        if let Ok((mut s, _)) = l.accept().await {
            let mut buf = vec![0u8; 4096];
            let mut got = 0;
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while got < 150 {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got += n,
                    }
                }
            })
            .await;
            drop(s);
        }
    });
    let ch = quorate_raft::network::channel(&addr.to_string(), None, None)
        .unwrap_or_else(|e| panic!("{e}"));
    let r = send_forward(ch, wire(), Duration::from_secs(3)).await;
    assert!(matches!(r, Err(ForwardFailure::Unknown(_))), "{r:?}");
}

#[test]
fn a_status_is_classified_by_its_cause_not_its_text() {
    let with = |msg: &str, kind: std::io::ErrorKind| {
        let mut s = tonic::Status::unavailable(msg);
        s.set_source(std::sync::Arc::new(std::io::Error::new(
            kind,
            msg.to_string(),
        )));
        s
    };
    // A reset after the request went out, whose text says "connect":
    // the old text rule called this NO_QUORUM (certainly not logged).
    let reset = with(
        "error reading from connection: connection reset by peer",
        std::io::ErrorKind::ConnectionReset,
    );
    assert!(!never_connected(&reset));
    // A refused connection, whatever its text, sent nothing.
    assert!(never_connected(&with(
        "transport error",
        std::io::ErrorKind::ConnectionRefused
    )));
    // No cause known: the outcome is unknown.
    assert!(!never_connected(&tonic::Status::unavailable(
        "tcp connect error"
    )));
}

#[tokio::test]
async fn a_leader_that_cannot_be_reached_was_sent_nothing() {
    // A port nobody listens on.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        l.local_addr().unwrap_or_else(|e| panic!("{e}"))
    };
    let ch = quorate_raft::network::channel(&addr.to_string(), None, None)
        .unwrap_or_else(|e| panic!("{e}"));
    let r = send_forward(ch, wire(), Duration::from_secs(3)).await;
    assert!(matches!(r, Err(ForwardFailure::NotSent(_))), "{r:?}");
}

#[test]
fn snapshots_are_spaced_by_entries_and_by_the_history_they_hold() {
    let r = crate::config::RaftConfig {
        snapshot_after_entries: 100,
        snapshot_after_growth_percent: 25,
        ..Default::default()
    };
    use super::start::snapshot_due;
    // A young log: entries decide.
    assert!(!snapshot_due(&r, 99, 50, 0));
    assert!(snapshot_due(&r, 100, 50, 0));
    // 10 M decisions at the last snapshot: 2.5 M more are needed, however
    // many entries went by.
    assert!(!snapshot_due(&r, 1_000_000, 12_499_999, 10_000_000));
    assert!(snapshot_due(&r, 1_000_000, 12_500_000, 10_000_000));
    assert!(!snapshot_due(&r, 99, 12_500_000, 10_000_000));
    // 0: entries alone.
    let entries_only = crate::config::RaftConfig {
        snapshot_after_growth_percent: 0,
        ..r
    };
    assert!(snapshot_due(&entries_only, 100, 10_000_000, 10_000_000));
}
