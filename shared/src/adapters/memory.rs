//! The embedded store: everything in process memory, behind one lock. It is the dev server's
//! default and passes the same conformance suite as the DynamoDB adapter, so its behaviour
//! (conditions, deadlines, counts) is the real one, not a mock's.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::models::status::DeliveryStatus;
use crate::ports::store::*;

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
    dedupe: HashMap<(String, String), i64>,
    turns: HashMap<(String, String), LaneState>,
    accounts: HashMap<u64, AccountRecord>,
    accounts_by_scope: HashMap<String, u64>,
    managers: HashMap<String, ManagerList>,
}

#[derive(Debug, Clone, Default)]
struct LaneState {
    /// (token, until_ms) of the sender holding the lane.
    holder: Option<(String, i64)>,
    sent_mark: Option<i64>,
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

#[async_trait]
impl TypingLeases for MemoryStore {
    async fn extend(&self, key: &LeaseKey, expires_at_ms: i64) -> Result<LeaseChange, StoreError> {
        self.ops.write();
        let mut state = self.state();
        // A lapsed lease still stored was not ended: it goes on (see the port).
        match state.leases.get(key).copied() {
            Some(lease) if lease.expires_at_ms >= expires_at_ms => {
                Ok(LeaseChange::Unchanged { expires_at_ms: lease.expires_at_ms })
            }
            Some(lease) => {
                state.leases.insert(key.clone(), Lease { expires_at_ms, ..lease });
                Ok(LeaseChange::Extended { previous_expires_at_ms: lease.expires_at_ms })
            }
            None => {
                let lease = Lease { expires_at_ms, last_forwarded_at_ms: None };
                state.leases.insert(key.clone(), lease);
                Ok(LeaseChange::Started)
            }
        }
    }

    async fn get_lease(&self, key: &LeaseKey, now_ms: i64) -> Result<Option<Lease>, StoreError> {
        self.ops.read();
        Ok(self.state().leases.get(key).copied().filter(|lease| lease.expires_at_ms > now_ms))
    }

    async fn end(&self, key: &LeaseKey, now_ms: i64) -> Result<Option<Lease>, StoreError> {
        self.ops.write();
        let mut state = self.state();
        match state.leases.get(key).copied() {
            Some(lease) if lease.expires_at_ms > now_ms => {
                state.leases.remove(key);
                Ok(Some(lease))
            }
            _ => Ok(None),
        }
    }

    async fn end_if_lapsed(&self, key: &LeaseKey, now_ms: i64) -> Result<Option<i64>, StoreError> {
        self.ops.write();
        let mut state = self.state();
        match state.leases.get(key).copied() {
            Some(lease) if lease.expires_at_ms <= now_ms => {
                state.leases.remove(key);
                Ok(Some(lease.expires_at_ms))
            }
            _ => Ok(None),
        }
    }

    async fn client_typing_signal(
        &self,
        key: &LeaseKey,
        now_ms: i64,
        expires_at_ms: i64,
        min_gap_ms: i64,
    ) -> Result<ClientSignal, StoreError> {
        self.ops.write();
        let mut state = self.state();
        let stored = state.leases.get(key).copied();
        match stored {
            Some(lease) if lease.expires_at_ms > now_ms => {
                if lease.expires_at_ms < expires_at_ms {
                    state.leases.insert(key.clone(), Lease { expires_at_ms, ..lease });
                }
                Ok(ClientSignal::Extended)
            }
            _ => {
                let last_forwarded = stored.and_then(|lease| lease.last_forwarded_at_ms);
                let forward_now = last_forwarded.is_none_or(|at| at <= now_ms - min_gap_ms);
                let last_forwarded_at_ms = if forward_now { Some(now_ms) } else { last_forwarded };
                state.leases.insert(key.clone(), Lease { expires_at_ms, last_forwarded_at_ms });
                let next_forward_at_ms = last_forwarded_at_ms.unwrap_or(now_ms) + min_gap_ms;
                Ok(ClientSignal::Started { forward_now, next_forward_at_ms })
            }
        }
    }

    async fn claim_refresh(&self, key: &LeaseKey, now_ms: i64, min_gap_ms: i64) -> Result<bool, StoreError> {
        self.ops.write();
        let mut state = self.state();
        match state.leases.get_mut(key) {
            Some(lease)
                if lease.expires_at_ms > now_ms
                    && lease.last_forwarded_at_ms.is_none_or(|at| at <= now_ms - min_gap_ms) =>
            {
                lease.last_forwarded_at_ms = Some(now_ms);
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

#[async_trait]
impl PresenceWindows for MemoryStore {
    async fn heartbeat(
        &self,
        key: &PresenceKey,
        now_ms: i64,
        window_ms: i64,
        coalesce_ms: i64,
    ) -> Result<HeartbeatOutcome, StoreError> {
        self.ops.read();
        let mut state = self.state();
        let devices = state.presence.entry(slot(&key.scope_id, &key.subject)).or_default();
        let current = devices.get(&key.device).copied();
        let online = current.is_some_and(|w| w.online_until_ms > now_ms);
        if online && current.is_some_and(|w| w.last_seen_at_ms > now_ms - coalesce_ms) {
            return Ok(HeartbeatOutcome::Coalesced);
        }
        self.ops.write();
        devices
            .insert(key.device.clone(), DeviceWindow { last_seen_at_ms: now_ms, online_until_ms: now_ms + window_ms });
        Ok(if online { HeartbeatOutcome::Refreshed } else { HeartbeatOutcome::CameOnline })
    }

    async fn go_offline(&self, key: &PresenceKey, now_ms: i64) -> Result<bool, StoreError> {
        self.ops.write();
        let mut state = self.state();
        let window = state
            .presence
            .get_mut(&slot(&key.scope_id, &key.subject))
            .and_then(|devices| devices.get_mut(&key.device))
            .filter(|w| w.online_until_ms > now_ms);
        match window {
            Some(window) => {
                *window = DeviceWindow { last_seen_at_ms: now_ms, online_until_ms: now_ms };
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn presence_devices(
        &self,
        scope_id: &str,
        subject: &str,
        now_ms: i64,
    ) -> Result<Vec<(String, PresenceView)>, StoreError> {
        self.ops.read();
        let state = self.state();
        let Some(devices) = state.presence.get(&slot(scope_id, subject)) else {
            return Ok(Vec::new());
        };
        let mut views: Vec<_> = devices
            .iter()
            .map(|(device, w)| (device.clone(), PresenceView::of_window(w.last_seen_at_ms, w.online_until_ms, now_ms)))
            .collect();
        views.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(views)
    }

    async fn mark_pushed(&self, scope_id: &str, subject: &str, device: &str, online: bool) -> Result<bool, StoreError> {
        self.ops.write();
        let mut state = self.state();
        let key = (scope_id.to_owned(), subject.to_owned(), device.to_owned());
        let changed = state.pushed.get(&key) != Some(&online);
        if changed {
            state.pushed.insert(key, online);
        }
        Ok(changed)
    }

    async fn pushed(&self, scope_id: &str, subject: &str, device: &str) -> Result<Option<bool>, StoreError> {
        self.ops.read();
        let key = (scope_id.to_owned(), subject.to_owned(), device.to_owned());
        Ok(self.state().pushed.get(&key).copied())
    }
}

fn slot(scope_id: &str, id: &str) -> (String, String) {
    (scope_id.to_owned(), id.to_owned())
}

#[async_trait]
impl MessageRecords for MemoryStore {
    async fn insert_message(&self, record: &MessageRecord) -> Result<bool, StoreError> {
        self.ops.write();
        let mut state = self.state();
        let key = slot(&record.scope_id, &record.kommo_msgid);
        if state.messages.contains_key(&key) {
            return Ok(false);
        }
        state.messages.insert(key, StoredMessage { record: record.clone(), relay_hold_until_ms: 0 });
        state
            .outgoing
            .entry(slot(&record.scope_id, &record.conversation_id))
            .or_default()
            .insert((record.created_at_ms, record.kommo_msgid.clone()));
        Ok(true)
    }

    async fn get_message(&self, scope_id: &str, kommo_msgid: &str) -> Result<Option<MessageRecord>, StoreError> {
        self.ops.read();
        Ok(self.state().messages.get(&slot(scope_id, kommo_msgid)).map(|stored| stored.record.clone()))
    }

    async fn advance_status(
        &self,
        scope_id: &str,
        kommo_msgid: &str,
        status: &DeliveryStatus,
        now_ms: i64,
    ) -> Result<StatusChange, StoreError> {
        self.ops.write();
        let mut state = self.state();
        let key = slot(scope_id, kommo_msgid);
        let current = state.messages.get(&key).and_then(|stored| stored.record.status_rank);
        if !status.may_replace(current) {
            return Ok(StatusChange::Unchanged { current_rank: current });
        }
        let stored = state.messages.entry(key).or_insert_with(|| StoredMessage {
            record: MessageRecord {
                scope_id: scope_id.to_owned(),
                kommo_msgid: kommo_msgid.to_owned(),
                conversation_id: String::new(),
                direction: Direction::Outgoing,
                chat_msgid: None,
                created_at_ms: now_ms,
                status_rank: None,
                // Heard of only through a status: whoever sent it, it reached the chat service.
                relay: RelayState::Sent,
            },
            relay_hold_until_ms: 0,
        });
        stored.record.status_rank = Some(status.rank());
        Ok(StatusChange::Advanced { previous_rank: current })
    }

    async fn claim_relay(
        &self,
        scope_id: &str,
        kommo_msgid: &str,
        now_ms: i64,
        hold_ms: i64,
    ) -> Result<RelayClaim, StoreError> {
        self.ops.write();
        let mut state = self.state();
        match state.messages.get_mut(&slot(scope_id, kommo_msgid)) {
            Some(stored) if stored.record.relay == RelayState::Pending && stored.relay_hold_until_ms <= now_ms => {
                stored.relay_hold_until_ms = now_ms + hold_ms;
                Ok(RelayClaim::Claimed)
            }
            Some(stored) if stored.record.relay == RelayState::Pending => {
                Ok(RelayClaim::HeldUntil(stored.relay_hold_until_ms))
            }
            _ => Ok(RelayClaim::Done),
        }
    }

    async fn finish_relay(&self, scope_id: &str, kommo_msgid: &str, outcome: &RelayOutcome) -> Result<(), StoreError> {
        self.ops.write();
        let mut state = self.state();
        let Some(stored) = state.messages.get_mut(&slot(scope_id, kommo_msgid)) else {
            return Err(StoreError::Corrupt(format!("no message {kommo_msgid} to finish relaying")));
        };
        let mut alias = None;
        match outcome {
            RelayOutcome::Sent { chat_msgid } => {
                stored.record.relay = RelayState::Sent;
                stored.record.chat_msgid = chat_msgid.clone();
                alias = chat_msgid.clone();
            }
            RelayOutcome::RetryAt(at_ms) => stored.relay_hold_until_ms = *at_ms,
            RelayOutcome::Failed => stored.record.relay = RelayState::Failed,
        }
        if let Some(chat_msgid) = alias {
            state.chat_msgids.insert(slot(scope_id, &chat_msgid), kommo_msgid.to_owned());
        }
        Ok(())
    }

    async fn kommo_msgid_for(&self, scope_id: &str, chat_msgid: &str) -> Result<Option<String>, StoreError> {
        self.ops.read();
        Ok(self.state().chat_msgids.get(&slot(scope_id, chat_msgid)).cloned())
    }

    async fn outgoing_up_to(
        &self,
        scope_id: &str,
        conversation_id: &str,
        created_at_ms: i64,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.ops.read();
        let state = self.state();
        let Some(index) = state.outgoing.get(&slot(scope_id, conversation_id)) else {
            return Ok(Vec::new());
        };
        Ok(index
            .range(..=(created_at_ms, String::from("\u{10FFFF}")))
            .rev()
            .take(limit)
            .map(|(_, msgid)| msgid.clone())
            .collect())
    }

    async fn insert_incoming(
        &self,
        scope_id: &str,
        chat_msgid: &str,
        conversation_id: &str,
        sent_at_ms: i64,
    ) -> Result<bool, StoreError> {
        self.ops.write();
        let mut state = self.state();
        let key = slot(scope_id, chat_msgid);
        if state.incoming.contains_key(&key) {
            return Ok(false);
        }
        state.incoming.insert(key, IncomingState::Pending);
        state.inbox.entry(slot(scope_id, conversation_id)).or_default().insert((sent_at_ms, chat_msgid.to_owned()));
        Ok(true)
    }

    async fn forget_incoming(
        &self,
        scope_id: &str,
        chat_msgid: &str,
        conversation_id: &str,
        sent_at_ms: i64,
    ) -> Result<(), StoreError> {
        self.ops.write();
        let mut state = self.state();
        state.incoming.remove(&slot(scope_id, chat_msgid));
        if let Some(inbox) = state.inbox.get_mut(&slot(scope_id, conversation_id)) {
            inbox.remove(&(sent_at_ms, chat_msgid.to_owned()));
        }
        Ok(())
    }

    async fn newest_incoming(
        &self,
        scope_id: &str,
        conversation_id: &str,
    ) -> Result<Option<(i64, String)>, StoreError> {
        self.ops.read();
        Ok(self.state().inbox.get(&slot(scope_id, conversation_id)).and_then(|inbox| inbox.last().cloned()))
    }

    async fn finish_incoming(&self, scope_id: &str, chat_msgid: &str, state: &IncomingState) -> Result<(), StoreError> {
        self.ops.write();
        self.state().incoming.insert(slot(scope_id, chat_msgid), state.clone());
        Ok(())
    }

    async fn incoming_state(&self, scope_id: &str, chat_msgid: &str) -> Result<Option<IncomingState>, StoreError> {
        self.ops.read();
        Ok(self.state().incoming.get(&slot(scope_id, chat_msgid)).cloned())
    }
}

#[async_trait]
impl Conversations for MemoryStore {
    async fn remember_conversation(
        &self,
        scope_id: &str,
        conversation_id: &str,
        facts: &ConversationFacts<'_>,
    ) -> Result<(), StoreError> {
        self.ops.write();
        let mut state = self.state();
        let stored = state.conversations.entry(slot(scope_id, conversation_id)).or_default();
        let info = &mut stored.info;
        info.conversation_id = conversation_id.to_owned();
        let fields = [
            (&mut info.kommo_chat_id, facts.kommo_chat_id),
            (&mut info.client_user_id, facts.client_user_id),
            (&mut info.kommo_client_id, facts.kommo_client_id),
            (&mut info.answered_as, facts.answered_as),
        ];
        for (field, fact) in fields {
            if let Some(value) = fact {
                *field = Some(value.to_owned());
            }
        }
        // A conversation named by Kommo's chat id needs no second name.
        if let Some(chat_id) = facts.kommo_chat_id.filter(|chat_id| *chat_id != conversation_id) {
            self.ops.write();
            state.chats_by_kommo_id.insert(slot(scope_id, chat_id), conversation_id.to_owned());
        }
        Ok(())
    }

    async fn find_conversation(&self, scope_id: &str, id: &str) -> Result<Option<ConversationInfo>, StoreError> {
        self.ops.read();
        let state = self.state();
        let conversation_id = match state.conversations.get(&slot(scope_id, id)) {
            Some(stored) => match &stored.info.answered_as {
                Some(answered_as) => {
                    self.ops.read();
                    answered_as.clone()
                }
                None => return Ok(Some(stored.info.clone())),
            },
            None => match state.chats_by_kommo_id.get(&slot(scope_id, id)) {
                Some(conversation_id) => {
                    self.ops.read();
                    conversation_id.clone()
                }
                None => return Ok(None),
            },
        };
        Ok(state.conversations.get(&slot(scope_id, &conversation_id)).map(|stored| stored.info.clone()))
    }

    async fn advance_read_mark(
        &self,
        scope_id: &str,
        conversation_id: &str,
        sent_at_ms: i64,
        chat_msgid: &str,
    ) -> Result<bool, StoreError> {
        self.ops.write();
        let mut state = self.state();
        let stored = state.conversations.entry(slot(scope_id, conversation_id)).or_default();
        let mark = (sent_at_ms, chat_msgid.to_owned());
        if stored.read_mark.as_ref().is_some_and(|current| *current >= mark) {
            return Ok(false);
        }
        stored.info.conversation_id = conversation_id.to_owned();
        stored.read_mark = Some(mark);
        Ok(true)
    }
}

#[async_trait]
impl DedupeKeys for MemoryStore {
    async fn claim(&self, scope_id: &str, key: &str, now_ms: i64, ttl_ms: i64) -> Result<bool, StoreError> {
        self.ops.write();
        let mut state = self.state();
        let slot = (scope_id.to_owned(), key.to_owned());
        if state.dedupe.get(&slot).is_some_and(|until| *until > now_ms) {
            return Ok(false);
        }
        state.dedupe.insert(slot, now_ms + ttl_ms);
        Ok(true)
    }

    async fn release(&self, scope_id: &str, key: &str) -> Result<(), StoreError> {
        self.ops.write();
        self.state().dedupe.remove(&(scope_id.to_owned(), key.to_owned()));
        Ok(())
    }
}

#[async_trait]
impl SendTurns for MemoryStore {
    async fn take_turn(&self, scope_id: &str, lane: &str, now_ms: i64, hold_ms: i64) -> Result<Turn, StoreError> {
        self.ops.write();
        let mut state = self.state();
        let lane = state.turns.entry((scope_id.to_owned(), lane.to_owned())).or_default();
        if let Some((_, until_ms)) = lane.holder.as_ref().filter(|(_, until_ms)| *until_ms > now_ms) {
            return Ok(Turn::Busy { until_ms: *until_ms });
        }
        let token = hex::encode(crate::ids::random_bytes::<8>());
        lane.holder = Some((token.clone(), now_ms + hold_ms));
        Ok(Turn::Yours { token, sent_mark: lane.sent_mark })
    }

    async fn peek_turn(&self, scope_id: &str, lane: &str, now_ms: i64) -> Result<LaneView, StoreError> {
        self.ops.read();
        let state = self.state();
        let Some(lane) = state.turns.get(&(scope_id.to_owned(), lane.to_owned())) else {
            return Ok(LaneView::default());
        };
        let held_until_ms = lane.holder.as_ref().map(|(_, until_ms)| *until_ms).filter(|until_ms| *until_ms > now_ms);
        Ok(LaneView { held_until_ms, sent_mark: lane.sent_mark })
    }

    async fn end_turn(
        &self,
        scope_id: &str,
        lane: &str,
        token: &str,
        sent_mark: Option<i64>,
    ) -> Result<(), StoreError> {
        self.ops.write();
        let mut state = self.state();
        let Some(lane) = state.turns.get_mut(&(scope_id.to_owned(), lane.to_owned())) else {
            return Ok(());
        };
        if lane.holder.as_ref().is_some_and(|(holder, _)| holder == token) {
            lane.holder = None;
        }
        if sent_mark > lane.sent_mark {
            lane.sent_mark = sent_mark;
        }
        Ok(())
    }
}

#[async_trait]
impl ManagerDirectory for MemoryStore {
    async fn managers_of(&self, scope_id: &str) -> Result<Option<ManagerList>, StoreError> {
        self.ops.read();
        Ok(self.state().managers.get(scope_id).cloned())
    }

    async fn put_managers(&self, scope_id: &str, list: &ManagerList) -> Result<(), StoreError> {
        self.ops.write();
        self.state().managers.insert(scope_id.to_owned(), list.clone());
        Ok(())
    }
}

#[async_trait]
impl AccountRegistry for MemoryStore {
    async fn put_account(&self, record: &AccountRecord) -> Result<(), StoreError> {
        self.ops.write();
        self.ops.write();
        let mut state = self.state();
        state.accounts_by_scope.insert(record.scope_id.clone(), record.account_id);
        state.accounts.insert(record.account_id, record.clone());
        Ok(())
    }

    async fn get_account(&self, account_id: u64) -> Result<Option<AccountRecord>, StoreError> {
        self.ops.read();
        Ok(self.state().accounts.get(&account_id).cloned())
    }

    async fn account_of_scope(&self, scope_id: &str) -> Result<Option<ScopeAccount>, StoreError> {
        self.ops.read();
        let state = self.state();
        let account_id = state.accounts_by_scope.get(scope_id).copied();
        Ok(account_id
            .and_then(|id| state.accounts.get(&id))
            .map(|account| ScopeAccount { account_id: account.account_id, state: account.state }))
    }

    async fn replace_tokens(
        &self,
        account_id: u64,
        expected_version: u64,
        sealed_tokens: &str,
        access_expires_at_ms: i64,
    ) -> Result<bool, StoreError> {
        self.ops.write();
        let mut state = self.state();
        let Some(account) = state.accounts.get_mut(&account_id) else { return Ok(false) };
        if account.token_version != expected_version || account.sealed_tokens.is_none() {
            return Ok(false);
        }
        account.sealed_tokens = Some(sealed_tokens.to_owned());
        account.access_expires_at_ms = access_expires_at_ms;
        account.token_version += 1;
        Ok(true)
    }

    async fn set_account_state(&self, account_id: u64, new_state: AccountState) -> Result<(), StoreError> {
        // The account and its scope's item, as DynamoDB writes them.
        self.ops.write();
        self.ops.write();
        let mut state = self.state();
        if let Some(account) = state.accounts.get_mut(&account_id) {
            account.state = new_state;
            if new_state == AccountState::Disconnected {
                account.sealed_tokens = None;
                account.token_version += 1;
            }
        }
        Ok(())
    }

    async fn list_accounts(&self) -> Result<Vec<AccountRecord>, StoreError> {
        self.ops.read();
        let mut accounts: Vec<_> = self.state().accounts.values().cloned().collect();
        accounts.sort_by_key(|account| account.account_id);
        Ok(accounts)
    }
}

#[cfg(test)]
mod tests {
    crate::store_conformance_tests!(std::sync::Arc::new(super::MemoryStore::new()));
}
