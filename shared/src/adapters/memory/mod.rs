//! The embedded store: everything in process memory, behind one lock. It is the dev server's
//! default and passes the same conformance suite as the DynamoDB adapter, so its behaviour
//! (conditions, deadlines, counts) is the real one, not a mock's.
//!
//! Here: [`MemoryStore`], the state every capability shares (one map per kind of item) and its
//! row types. Each capability's `impl` is in its own file.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::ports::store::{
    AccountRecord, ConversationInfo, IncomingState, Lease, LeaseKey, ManagerList, MessageRecord, OpCounter, OpCounts,
    Store,
};

mod accounts;
mod conversations;
mod dedupe;
mod leases;
mod managers;
mod messages;
mod presence;
mod sources;
mod turns;

#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
    ops: OpCounter,
}

#[derive(Debug, Default)]
struct State {
    leases: HashMap<LeaseKey, Lease>,
    presence: HashMap<(String, String), HashMap<String, DeviceWindow>>,
    messages: HashMap<(String, String), StoredMessage>,
    /// (scope, conversation) → (created_at_ms, kommo msgid) of its manager messages.
    outgoing: HashMap<(String, String), std::collections::BTreeSet<(i64, String)>>,
    chat_msgids: HashMap<(String, String), String>,
    incoming: HashMap<(String, String), IncomingState>,
    /// (scope, conversation) → (sent_at_ms, chat msgid) of its client messages.
    inbox: HashMap<(String, String), std::collections::BTreeSet<(i64, String)>>,
    conversations: HashMap<(String, String), StoredConversation>,
    chats_by_kommo_id: HashMap<(String, String), String>,
    pushed: HashMap<(String, String, String), bool>,
    dedupe: HashMap<(String, String), DedupeEntry>,
    turns: HashMap<(String, String), LaneState>,
    accounts: HashMap<u64, AccountRecord>,
    accounts_by_scope: HashMap<String, u64>,
    managers: HashMap<String, ManagerList>,
    /// (scope, external id) → the source.
    sources: HashMap<(String, String), crate::ports::store::KnownSource>,
}

/// A dedupe key: held by `token` until `until_ms`, or done and remembered until then.
#[derive(Debug, Clone)]
struct DedupeEntry {
    until_ms: i64,
    token: String,
    done: bool,
}

#[derive(Debug, Clone, Default)]
struct LaneState {
    /// (token, until_ms) of the sender holding the lane.
    holder: Option<(String, i64)>,
    sent_mark: Option<i64>,
    /// The mark was raised before its send and the send not confirmed since.
    unconfirmed: bool,
}

#[derive(Debug, Clone, Default)]
struct StoredConversation {
    info: ConversationInfo,
    read_mark: Option<(i64, String)>,
}

#[derive(Debug, Clone)]
struct StoredMessage {
    record: MessageRecord,
    relay_hold_until_ms: i64,
}

#[derive(Debug, Clone, Copy)]
struct DeviceWindow {
    last_seen_at_ms: i64,
    online_until_ms: i64,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many items are stored, all kinds together (tests: "nothing was kept").
    pub fn item_count(&self) -> usize {
        let state = self.state();
        state.leases.len()
            + state.presence.values().map(HashMap::len).sum::<usize>()
            + state.messages.len()
            + state.outgoing.values().map(|set| set.len()).sum::<usize>()
            + state.chat_msgids.len()
            + state.incoming.len()
            + state.inbox.values().map(|set| set.len()).sum::<usize>()
            + state.conversations.len()
            + state.chats_by_kommo_id.len()
            + state.pushed.len()
            + state.dedupe.len()
            + state.turns.len()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves plain data behind: keep serving it.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Store for MemoryStore {
    fn op_counts(&self) -> OpCounts {
        self.ops.counts()
    }
}

fn slot(scope_id: &str, id: &str) -> (String, String) {
    (scope_id.to_owned(), id.to_owned())
}

#[cfg(test)]
mod tests {
    crate::store_conformance_tests!(std::sync::Arc::new(super::MemoryStore::new()));
}
