//! Read receipts, Kommo UI → chat service: a manager opening a conversation reads the client's
//! messages. One `message.read` names the newest client message not yet reported read, and the
//! conversation's read mark (a compare-and-set) makes sure it is never sent twice.

use std::sync::Arc;

use super::FlowError;
use crate::models::chat::BridgeEvent;
use crate::ports::store::{Conversations, MessageRecords};
use crate::ports::timers::{DueWork, Timers};
use crate::time::Clock;

#[derive(Clone)]
pub struct ReadReceipts {
    pub records: Arc<dyn MessageRecords>,
    pub conversations: Arc<dyn Conversations>,
    pub timers: Arc<dyn Timers>,
    pub clock: Arc<dyn Clock>,
    /// `FORWARD_READ_RECEIPTS`: off, nothing is forwarded.
    pub enabled: bool,
}

impl ReadReceipts {
    /// A manager opened the conversation: returns the msgid reported read, if one was due.
    pub async fn on_opened(&self, scope_id: &str, conversation_id: &str) -> Result<Option<String>, FlowError> {
        if !self.enabled {
            return Ok(None);
        }
        let Some((sent_at_ms, msgid)) = self.records.newest_incoming(scope_id, conversation_id).await? else {
            return Ok(None);
        };
        if !self.conversations.advance_read_mark(scope_id, conversation_id, sent_at_ms, &msgid).await? {
            return Ok(None);
        }
        let read = BridgeEvent::MessageRead {
            scope_id: scope_id.to_owned(),
            conversation_id: conversation_id.to_owned(),
            msgid: msgid.clone(),
            read_at: self.clock.now_s(),
        };
        self.timers.schedule(DueWork::deliver(read), self.clock.now_ms()).await?;
        Ok(Some(msgid))
    }
}
