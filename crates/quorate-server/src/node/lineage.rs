//! Lineage queries: a decision's ancestors (following `parent`, a request id
//! of the same domain) and descendants, and every decision of a trace id.
//! Bounded and paginated; read from this node's applied state through the
//! store's lineage index.

use super::*;

/// Ancestors are followed at most this far up.
pub(super) const MAX_ANCESTORS: usize = 64;
/// At most this many records in one answer.
pub const MAX_LINEAGE: usize = 1000;

/// Decisions and the parent → child edges among them.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Lineage {
    /// The decision asked about (`None` for a trace).
    pub focus: Option<u64>,
    /// Its topmost ancestor found (itself when it has no parent).
    pub root: Option<u64>,
    /// In log order.
    pub records: Vec<DecisionRecord>,
    /// (parent index, child index), both in `records`.
    pub edges: Vec<(u64, u64)>,
    /// Not every descendant fit in `limit`.
    pub truncated: bool,
    /// For a trace: there are more after this index.
    pub next_after: Option<u64>,
}

impl Node {
    /// The decision at `index` with its ancestors (up to `MAX_ANCESTORS`)
    /// and its descendants, breadth-first, so that at most `limit` records
    /// are returned (capped at `MAX_LINEAGE`).
    pub fn lineage_of(&self, index: u64, limit: usize) -> Result<Lineage, ApiError> {
        let limit = limit.clamp(1, MAX_LINEAGE);
        let lookup = &self.inner.lookup;
        let focus = lookup
            .decision(index)
            .map_err(|e| self.store_error(e))?
            .ok_or_else(|| {
                ApiError::new(ErrorCode::NotFound, format!("no decision at index {index}"))
            })?;
        let mut records = BTreeMap::new();
        // Up the parent chain. A parent is a request id of the same domain,
        // and nothing stops a request from naming one decided later, so two
        // requests can name each other: the walk stops at a record already
        // seen, and after MAX_ANCESTORS steps.
        let mut root = focus.index;
        let mut at = focus.clone();
        records.insert(focus.index, focus.clone());
        for _ in 0..MAX_ANCESTORS {
            let Some(parent) = &at.request.parent else {
                break;
            };
            let Some(p) = lookup
                .decision_by_request(&at.request.domain, parent)
                .map_err(|e| self.store_error(e))?
            else {
                break;
            };
            if records.contains_key(&p.index) || records.len() >= limit {
                break;
            }
            root = p.index;
            records.insert(p.index, p.clone());
            at = p;
        }
        // Down, breadth-first from the focus.
        let mut truncated = false;
        let mut queue = std::collections::VecDeque::from([focus]);
        'walk: while let Some(r) = queue.pop_front() {
            let room = limit.saturating_sub(records.len());
            let kids = lookup
                .children(&r.request.domain, &r.request.request_id, 0, room + 1)
                .map_err(|e| self.store_error(e))?;
            for k in kids {
                if records.contains_key(&k) {
                    continue;
                }
                if records.len() >= limit {
                    truncated = true;
                    break 'walk;
                }
                let Some(child) = lookup.decision(k).map_err(|e| self.store_error(e))? else {
                    continue;
                };
                records.insert(k, child.clone());
                queue.push_back(child);
            }
        }
        Ok(Lineage {
            focus: Some(index),
            root: Some(root),
            edges: self.edges(&records)?,
            records: records.into_values().collect(),
            truncated,
            next_after: None,
        })
    }

    /// The decisions carrying `trace_id` above `after`, in log order, at
    /// most `limit` (capped at `MAX_LINEAGE`).
    pub fn trace(&self, trace_id: &str, after: u64, limit: usize) -> Result<Lineage, ApiError> {
        let limit = limit.clamp(1, MAX_LINEAGE);
        let lookup = &self.inner.lookup;
        let mut found = lookup
            .trace(trace_id, after, limit + 1)
            .map_err(|e| self.store_error(e))?;
        let more = found.len() > limit;
        found.truncate(limit);
        let mut records = BTreeMap::new();
        for i in &found {
            if let Some(r) = lookup.decision(*i).map_err(|e| self.store_error(e))? {
                records.insert(*i, r);
            }
        }
        Ok(Lineage {
            focus: None,
            root: None,
            edges: self.edges(&records)?,
            records: records.into_values().collect(),
            truncated: false,
            next_after: if more { found.last().copied() } else { None },
        })
    }

    /// The parent → child edges among `records`.
    fn edges(&self, records: &BTreeMap<u64, DecisionRecord>) -> Result<Vec<(u64, u64)>, ApiError> {
        let mut edges = Vec::new();
        for r in records.values() {
            let Some(parent) = &r.request.parent else {
                continue;
            };
            if let Some(p) = self
                .inner
                .lookup
                .index_of_request(&r.request.domain, parent)
                .map_err(|e| self.store_error(e))?
                && records.contains_key(&p)
            {
                edges.push((p, r.index));
            }
        }
        Ok(edges)
    }
}
