//! [`MessageRecords`] in memory.

use async_trait::async_trait;

use super::{MemoryStore, StoredMessage, slot};
use crate::models::status::DeliveryStatus;
use crate::ports::store::{
    Direction, IncomingState, MessageRecord, MessageRecords, RelayClaim, RelayOutcome, RelayState, StatusChange,
    StoreError,
};

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
                // Heard of only through a status: not relayed by this bridge, which records a
                // message before relaying it. If its webhook is recorded after all (queued whole
                // while the store stalled), the message is relayed then.
                relay: RelayState::Pending,
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
