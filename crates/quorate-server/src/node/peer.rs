//! What this node answers its peers (`quorate_raft::service::PeerHandler`):
//! its identity, attestations, admission of node certificates, snapshots for
//! repair.

use super::*;

#[tonic::async_trait]
impl PeerHandler for Node {
    fn identity(&self, nonce: &[u8; 32]) -> Identity {
        let cluster_id = self.inner.cfg.cluster_id.clone();
        let proof = self.inner.key.sign(&quorate_core::proof::identity_message(
            &cluster_id,
            self.inner.id,
            nonce,
        ));
        Identity {
            node_id: self.inner.id,
            cluster_id,
            public_key: self.inner.key.public(),
            region: self.inner.cfg.region.clone(),
            proof,
            has_state: self.has_raft_state(),
        }
    }

    /// A voter's attestations. Each must be signed by the voter on this
    /// connection (with TLS: the certificate's node), be a voter of the
    /// applied membership and verify under its key; only then is it
    /// counted, and only on the leader. Bounded: one per voter per size.
    async fn attest(
        &self,
        peer: Option<&quorate_raft::tls::PeerInfo>,
        batch: Vec<Attestation>,
    ) -> Result<(), String> {
        if self.inner.tls.is_some() {
            let sender = peer
                .and_then(|p| p.identity.as_ref())
                .map(|i| i.principal.clone());
            let Some(quorate_raft::tls::Principal::Node(n)) = sender else {
                return Err("only nodes attest".into());
            };
            if let Some(a) = batch.iter().find(|a| a.signer != n) {
                metrics::counter!("quorate_attestations_refused_total", "why" => "not_own")
                    .increment(1);
                return Err(format!(
                    "node {n} sent an attestation signed as node {}; a voter attests only for itself",
                    a.signer
                ));
            }
        }
        if self.inner.raft.metrics().borrow_watched().state != ServerState::Leader {
            return Err(format!("node {} is not the leader", self.inner.id));
        }
        let voters = self.inner.lookup.applied_voters();
        let mut first_error = None;
        for a in &batch {
            match self.inner.attestations.add_peer(a, &voters) {
                Ok(()) => metrics::counter!("quorate_attestations_total").increment(1),
                Err(e) => {
                    metrics::counter!("quorate_attestations_refused_total", "why" => "invalid")
                        .increment(1);
                    first_error.get_or_insert(e.to_string());
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// With TLS, the Raft transport serves only nodes of this cluster: any
    /// of them may ask who this node is (bootstrap, add-learner) and may
    /// replicate to a node that has no membership yet (one joining);
    /// otherwise the caller must be in this node's membership.
    fn admit_peer(
        &self,
        peer: Option<&quorate_raft::tls::PeerInfo>,
        rpc: &'static str,
    ) -> Result<(), String> {
        use quorate_raft::tls::Principal;
        if self.inner.tls.is_none() {
            return Ok(());
        }
        let Some(id) = peer.and_then(|p| p.identity.as_ref()) else {
            return Err(format!("{rpc} needs a node certificate of this cluster"));
        };
        let Principal::Node(n) = id.principal else {
            return Err(format!("{id} is a client; only nodes may call {rpc}"));
        };
        if id.cluster_id != self.inner.cfg.cluster_id {
            return Err(format!("{id} belongs to another cluster"));
        }
        if rpc == "Identity" {
            return Ok(());
        }
        let m = self.inner.raft.metrics();
        let m = m.borrow_watched();
        let membership = m.membership_config.membership();
        if membership.nodes().next().is_none() || membership.get_node(&n).is_some() {
            Ok(())
        } else {
            Err(format!("node {n} is not a member of this cluster"))
        }
    }

    async fn fetch_snapshot(&self) -> Result<quorate_raft::Snapshot, String> {
        // Never hand out state this node cannot vouch for.
        if let Some((reason, msg)) = self.state_in_doubt() {
            return Err(format!(
                "node {} is contained ({reason}): {msg}",
                self.inner.id
            ));
        }
        let lookup = self.inner.lookup.clone();
        tokio::task::spawn_blocking(move || lookup.build_snapshot())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }
}
