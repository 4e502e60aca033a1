//! A client's typing, chat service → Kommo. The chat service's `typing.started` extends the
//! client's lease in one conditional write. The signal that starts a lease calls amojo at once
//! (Kommo shows it for 5 s) and starts a refresh chain: a timer every 4 s that, while the lease
//! lives, claims and makes the next call. However often the client signals, Kommo gets one call
//! per 4 s, and `typing.stopped` (or a client message, or the lease running out) ends it: no
//! call after. Kommo shows typing only in a chat it has (it answers 404 for any other), so a
//! conversation whose chat Kommo does not have yet gets no call, and one the chat service
//! answered under its own id gets it under the id Kommo has bound.

use std::sync::Arc;

use super::FlowError;
use super::kommo_names::kommo_typing_conversation;
use crate::models::chat::ClientTypingSignal;
use crate::models::kommo::{SenderRef, TypingRequest};
use crate::ports::kommo::KommoApi;
use crate::ports::store::{ClientSignal, Conversations, LeaseKey, TypingLeases};
use crate::ports::timers::{DueWork, Timers};
use crate::rules::typing::{KOMMO_TYPING_INTERVAL_MS, RefreshStep, client_typing_ttl_ms, refresh_step};
use crate::time::Clock;

/// Both halves: the chat service's signals and the queued refresh chain use the same ports.
#[derive(Clone)]
pub struct ClientTyping {
    pub leases: Arc<dyn TypingLeases>,
    /// Which conversations Kommo has, and under which id.
    pub conversations: Arc<dyn Conversations>,
    pub timers: Arc<dyn Timers>,
    pub kommo: Arc<dyn KommoApi>,
    pub clock: Arc<dyn Clock>,
}

impl ClientTyping {
    /// The chat service's `typing.started`: one conditional write that extends the live lease,
    /// or starts one and returns it, not yet shown: [`Self::start`] shows it at once and starts
    /// the refresh chain ([`Self::undo`] ends it unshown, for a replay).
    pub async fn signal(&self, typing: &ClientTypingSignal) -> Result<Option<StartedLease>, FlowError> {
        let ttl_ms = client_typing_ttl_ms(typing.ttl_ms)?;
        let now = self.clock.now_ms();
        let key = LeaseKey::client(&typing.scope_id, &typing.conversation_id, &typing.user_id);
        let signal = self.leases.client_typing_signal(&key, now, now + ttl_ms, KOMMO_TYPING_INTERVAL_MS).await?;
        let ClientSignal::Started { forward_now, next_forward_at_ms } = signal else {
            return Ok(None);
        };
        Ok(Some(StartedLease { key, user_id: typing.user_id.clone(), forward_now, next_forward_at_ms }))
    }

    /// A lease just started: shown in Kommo at once, and its refresh chain started.
    pub async fn start(&self, started: &StartedLease) -> Result<(), FlowError> {
        if started.forward_now {
            self.show(&started.key, &started.user_id).await;
        }
        self.timers.schedule(refresh(&started.key, &started.user_id), started.next_forward_at_ms).await?;
        Ok(())
    }

    /// A lease started by a signal that turned out to be a replay: ended before anything of it
    /// was shown.
    pub async fn undo(&self, started: &StartedLease) -> Result<(), FlowError> {
        self.leases.end(&started.key, self.clock.now_ms()).await?;
        Ok(())
    }

    /// The chat service's `typing.stopped` (or the client's message): no typing call after this.
    pub async fn end(&self, scope_id: &str, conversation_id: &str, user_id: &str) -> Result<(), FlowError> {
        let key = LeaseKey::client(scope_id, conversation_id, user_id);
        self.leases.end(&key, self.clock.now_ms()).await?;
        Ok(())
    }

    /// The refresh chain of a client's lease: while it lives, claims and makes the next typing
    /// call, then looks again one interval later. A claim denied (the lease ended, or another
    /// chain of the same lease made the call) ends this chain, so chains never pile up.
    pub async fn refresh(&self, scope_id: &str, conversation_id: &str, user_id: &str) -> Result<(), FlowError> {
        let now = self.clock.now_ms();
        let key = LeaseKey::client(scope_id, conversation_id, user_id);
        let Some(lease) = self.leases.get_lease(&key, now).await? else {
            return Ok(()); // stopped or lapsed: the chain ends here
        };
        let next_look = match refresh_step(lease.expires_at_ms, now) {
            RefreshStep::LookAgainAt(at_ms) => at_ms,
            RefreshStep::Show if self.leases.claim_refresh(&key, now, KOMMO_TYPING_INTERVAL_MS).await? => {
                self.show(&key, user_id).await;
                now + KOMMO_TYPING_INTERVAL_MS
            }
            RefreshStep::Show => return Ok(()),
        };
        self.timers.schedule(refresh(&key, user_id), next_look).await?;
        Ok(())
    }

    /// One amojo typing call, for a conversation Kommo has; a failure is logged and dropped
    /// (after the client's one quick retry): typing is ephemeral and must never hold up other
    /// work.
    async fn show(&self, key: &LeaseKey, user_id: &str) {
        let conversations = self.conversations.as_ref();
        let conversation_id = match kommo_typing_conversation(conversations, &key.scope_id, &key.conversation_id).await
        {
            Ok(Some(conversation_id)) => conversation_id,
            Ok(None) => return, // no chat in Kommo yet: its first message makes one
            Err(error) => {
                tracing::warn!(%error, "client typing not shown in Kommo; dropped");
                return;
            }
        };
        let request = TypingRequest { conversation_id, sender: SenderRef { id: user_id.to_owned() } };
        if let Err(error) = self.kommo.typing(&key.scope_id, &request).await {
            tracing::warn!(%error, "client typing not shown in Kommo; dropped");
        }
    }
}

/// A client's lease that a `typing.started` just opened.
pub struct StartedLease {
    key: LeaseKey,
    user_id: String,
    forward_now: bool,
    next_forward_at_ms: i64,
}

fn refresh(key: &LeaseKey, user_id: &str) -> DueWork {
    DueWork::ClientTypingRefresh {
        scope_id: key.scope_id.clone(),
        conversation_id: key.conversation_id.clone(),
        user_id: user_id.to_owned(),
    }
}
