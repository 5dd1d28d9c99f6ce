//! Commit probes: an entry that changes nothing, proposed through the same
//! batcher, replication and apply as a decision batch (and forwarded to the
//! leader the same way). An answer proves the write path end to end; the
//! probe rate is the cluster's own ceiling for governed decisions.

use super::*;

/// A probe that was committed and applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeAnswer {
    /// The log index of the entry that carried it.
    pub log_index: u64,
    /// The leader that proposed it.
    pub leader: u64,
}

impl Node {
    /// Commits and applies a probe, or says why it could not.
    pub async fn probe(&self, forwarded: bool) -> Result<ProbeAnswer, ApiError> {
        // A contained node proposes nothing, probes included: a probe must
        // not report a write path that decisions could not use.
        if let Some((reason, msg)) = self.containment() {
            return Err(ApiError::new(
                ErrorCode::Contained,
                format!("{}: {msg}", reason.code()),
            ));
        }
        let deadline = self.commit_timeout();
        if let Some(leader) = self.route() {
            if forwarded {
                return Err(ApiError::unavailable(
                    "forwarded to a node that is not the leader; retry",
                ));
            }
            let Some((leader, addr)) = leader else {
                return Err(ApiError::unavailable("no known leader; retry"));
            };
            return self.forward_probe(leader, &addr, deadline).await;
        }
        match propose(&self.inner.probes, (), deadline).await {
            Err(_) => Err(ApiError::new(
                ErrorCode::CommitTimeout,
                format!(
                    "the probe was not committed within {} ms: the write path is stalled",
                    deadline.as_millis()
                ),
            )),
            Ok(None) => Err(ApiError::unavailable("node is shutting down")),
            Ok(Some(Err(ProposeError::NotLeader(msg)))) => Err(ApiError::unavailable(msg)),
            Ok(Some(Err(ProposeError::Unknown(msg)))) => Err(ApiError::unavailable(format!(
                "{msg}; the probe may still commit"
            ))),
            Ok(Some(Ok(log_index))) => Ok(ProbeAnswer {
                log_index,
                leader: self.id(),
            }),
        }
    }

    async fn forward_probe(
        &self,
        leader: u64,
        addr: &str,
        deadline: Duration,
    ) -> Result<ProbeAnswer, ApiError> {
        let channel = self
            .inner
            .channels
            .get(addr, leader)
            .map_err(|e| ApiError::unavailable(format!("leader {leader}: {e}")))?;
        let mut client = GovernanceClient::new(channel);
        let mut request = tonic::Request::new(quorate_proto::v1::ProbeRequest {});
        request.set_timeout(deadline);
        request.metadata_mut().insert(
            FORWARDED_METADATA_KEY,
            tonic::metadata::MetadataValue::from_static("1"),
        );
        let resp = client
            .probe(request)
            .await
            .map_err(|s| from_status(&s))?
            .into_inner();
        Ok(ProbeAnswer {
            log_index: resp.log_index,
            leader: resp.leader_id,
        })
    }
}
