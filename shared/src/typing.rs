//! Typing indicators both ways. Typing is a lease that lapses by itself, never a toggle:
//!
//! - Manager → chat service: Kommo's typing webhook (every 5 s, with `expired_at`) opens or
//!   extends the manager's lease in one conditional write. Only the write that starts a lease
//!   sends `typing.started`; a timer at the expiry ends a lapsed lease with a compare-and-set
//!   and sends `typing.stopped` exactly once. A manager's message ends the lease at once. A
//!   webhook that finds the lease lapsed but not yet ended (its timer late) extends it: the
//!   chat service was never told it stopped, so a new start would be a second one.
//! - Client → Kommo: the chat service's `typing.started` extends the client's lease in one
//!   conditional write. The signal that starts a lease calls amojo at once (Kommo shows it for
//!   5 s) and starts a refresh chain: a timer every 4 s that, while the lease lives, claims and
//!   makes the next call. However often the client signals, Kommo gets one call per 4 s, and
//!   `typing.stopped` (or a client message, or the lease running out) ends it: no call after.

use crate::app::Bridge;
use crate::due::TypingShown;
use crate::http::ApiError;
use crate::lanes::typing_lane;
use crate::models::chat::{BridgeEvent, ClientTyping, ManagerRef};
use crate::models::kommo::{SenderRef, TypingAction, TypingRequest};
use crate::store::{ClientSignal, LeaseChange, LeaseKey};
use crate::timers::DueWork;

/// How long a client's `typing.started` vouches for, unless it says (`ttl_ms`).
pub const CLIENT_TYPING_DEFAULT_TTL_MS: i64 = 6000;
pub const CLIENT_TYPING_MAX_TTL_MS: i64 = 30_000;
/// Kommo shows a typing call for 5 s: one every 4 s keeps the indicator up without flicker and
/// stays above the floor of one call per 3 s.
pub const KOMMO_TYPING_INTERVAL_MS: i64 = 4000;
/// A refresh is skipped when the lease ends sooner than this: the indicator would outlive it.
const MIN_USEFUL_REFRESH_MS: i64 = 1000;
/// Kommo re-sends the manager-typing webhook every 5 s with `expired_at` 5 s ahead, so each
/// one lands right at the previous expiry. The lease runs this much past `expired_at`, so a
/// webhook a little late does not end typing and start it again (flapping).
pub const MANAGER_TYPING_GRACE_MS: i64 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum DueError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Timer(#[from] crate::timers::TimerError),
}

impl Bridge {
    /// Kommo's manager-typing webhook: one conditional write; on a new lease, `typing.started`
    /// is queued for the chat service and the expiry timer set.
    pub(crate) async fn on_manager_typing(&self, scope_id: &str, typing: &TypingAction) -> Result<(), ApiError> {
        if !self.config.privacy.forward_manager_typing {
            return Ok(());
        }
        let now = self.clock.now_ms();
        let kommo_expiry_ms = typing.expired_at.saturating_mul(1000);
        if kommo_expiry_ms <= now {
            tracing::debug!(scope_id, "manager typing already expired; ignored");
            return Ok(());
        }
        let conversation_id = typing.conversation.integration_id();
        let key = LeaseKey::manager(scope_id, conversation_id, &typing.user.id);
        // Kommo says 5 s ahead; a far-future `expired_at` must neither overflow nor leave the
        // indicator stuck on: the lease is capped like a client's.
        let expires_at_ms = kommo_expiry_ms.min(now + CLIENT_TYPING_MAX_TTL_MS) + MANAGER_TYPING_GRACE_MS;
        let change = self.store.extend(&key, expires_at_ms).await.map_err(store_fault)?;
        if change != LeaseChange::Started {
            return Ok(());
        }
        let started = BridgeEvent::TypingStarted {
            scope_id: scope_id.to_owned(),
            conversation_id: conversation_id.to_owned(),
            manager: ManagerRef { id: typing.user.id.clone(), name: None },
            expires_at: typing.expired_at,
        };
        let check = DueWork::ManagerTypingCheck {
            scope_id: scope_id.to_owned(),
            conversation_id: conversation_id.to_owned(),
            manager_id: typing.user.id.clone(),
        };
        let scheduled = tokio::try_join!(
            self.timers.schedule(DueWork::deliver(started), now),
            self.timers.schedule(check, expires_at_ms)
        );
        if let Err(error) = scheduled {
            // Without its timer the lease could never send typing.stopped: undo it, so the
            // next webhook (5 s later) starts afresh, and let Kommo see the fault.
            tracing::error!(scope_id, %error, "typing timer not scheduled");
            let _ = self.store.end(&key, now).await;
            return Err(ApiError::internal());
        }
        Ok(())
    }

    /// The manager sent a message: their typing is over, at once (the message's relay tells
    /// the chat service, just before the message).
    pub(crate) async fn end_manager_typing(
        &self,
        scope_id: &str,
        conversation_id: &str,
        manager: &ManagerRef,
    ) -> Result<(), ApiError> {
        let key = LeaseKey::manager(scope_id, conversation_id, &manager.id);
        self.store.end(&key, self.clock.now_ms()).await.map_err(store_fault)?;
        Ok(())
    }

    /// The timer at a manager lease's expiry: ends it if it lapsed (once), or looks again at
    /// its new expiry if it was extended.
    pub(crate) async fn check_manager_typing(
        &self,
        scope_id: &str,
        conversation_id: &str,
        manager_id: &str,
    ) -> Result<(), DueError> {
        let now = self.clock.now_ms();
        let key = LeaseKey::manager(scope_id, conversation_id, manager_id);
        let stopped = || BridgeEvent::TypingStopped {
            scope_id: scope_id.to_owned(),
            conversation_id: conversation_id.to_owned(),
            manager: ManagerRef { id: manager_id.to_owned(), name: None },
        };
        if self.store.end_if_lapsed(&key, now).await?.is_some() {
            return self.deliver_chat_event(stopped(), new_webhook_id(), 0).await;
        }
        let Some(lease) = self.store.get_lease(&key, now).await? else {
            // Gone: ended by the manager's message (whose relay stops the typing), or by this
            // very check, when the SDK retried a delete that had landed. The lane tells whether
            // the chat service still shows the typing.
            let view = self.store.peek_turn(scope_id, &typing_lane(&key), now).await?;
            if view.held_until_ms.is_some() || TypingShown::from_mark(view.sent_mark).on() {
                return self.deliver_chat_event(stopped(), new_webhook_id(), 0).await;
            }
            return Ok(());
        };
        let again = DueWork::ManagerTypingCheck {
            scope_id: scope_id.to_owned(),
            conversation_id: conversation_id.to_owned(),
            manager_id: manager_id.to_owned(),
        };
        self.timers.schedule(again, lease.expires_at_ms).await?;
        Ok(())
    }

    /// The chat service's `typing.started`: one conditional write while a lease lives; the one
    /// that starts a lease also shows the typing at once and starts the refresh chain.
    pub(crate) async fn on_client_typing_started(&self, typing: &ClientTyping) -> Result<(), ApiError> {
        let ttl_ms = client_typing_ttl_ms(typing)?;
        let now = self.clock.now_ms();
        let key = LeaseKey::client(&typing.scope_id, &typing.conversation_id, &typing.user_id);
        let signal = self
            .store
            .client_typing_signal(&key, now, now + ttl_ms, KOMMO_TYPING_INTERVAL_MS)
            .await
            .map_err(store_fault)?;
        let ClientSignal::Started { forward_now, next_forward_at_ms } = signal else {
            return Ok(());
        };
        if forward_now {
            self.show_client_typing(&typing.scope_id, &typing.conversation_id, &typing.user_id).await;
        }
        let refresh = DueWork::ClientTypingRefresh {
            scope_id: typing.scope_id.clone(),
            conversation_id: typing.conversation_id.clone(),
            user_id: typing.user_id.clone(),
        };
        self.timers.schedule(refresh, next_forward_at_ms).await.map_err(|error| {
            tracing::error!(scope_id = %typing.scope_id, %error, "typing refresh not scheduled");
            ApiError::internal()
        })
    }

    /// The chat service's `typing.stopped` (or a client message): no typing call after this.
    pub(crate) async fn end_client_typing(
        &self,
        scope_id: &str,
        conversation_id: &str,
        user_id: &str,
    ) -> Result<(), ApiError> {
        let key = LeaseKey::client(scope_id, conversation_id, user_id);
        self.store.end(&key, self.clock.now_ms()).await.map_err(store_fault)?;
        Ok(())
    }

    /// The refresh chain of a client's lease: while it lives, claims and makes the next typing
    /// call, then looks again one interval later. A claim denied (the lease ended, or another
    /// chain of the same lease made the call) ends this chain, so chains never pile up.
    pub(crate) async fn refresh_client_typing(
        &self,
        scope_id: &str,
        conversation_id: &str,
        user_id: &str,
    ) -> Result<(), DueError> {
        let now = self.clock.now_ms();
        let key = LeaseKey::client(scope_id, conversation_id, user_id);
        let Some(lease) = self.store.get_lease(&key, now).await? else {
            return Ok(()); // stopped or lapsed: the chain ends here
        };
        let next_look = if lease.expires_at_ms - now < MIN_USEFUL_REFRESH_MS {
            // The indicator would outlive the lease: look again when it would lapse, in case
            // the client keeps typing and extends it.
            lease.expires_at_ms
        } else if self.store.claim_refresh(&key, now, KOMMO_TYPING_INTERVAL_MS).await? {
            self.show_client_typing(scope_id, conversation_id, user_id).await;
            now + KOMMO_TYPING_INTERVAL_MS
        } else {
            return Ok(());
        };
        let refresh = DueWork::ClientTypingRefresh {
            scope_id: scope_id.to_owned(),
            conversation_id: conversation_id.to_owned(),
            user_id: user_id.to_owned(),
        };
        self.timers.schedule(refresh, next_look).await?;
        Ok(())
    }

    /// One amojo typing call; a failure is logged and dropped (after the client's one quick
    /// retry): typing is ephemeral and must never hold up other work.
    async fn show_client_typing(&self, scope_id: &str, conversation_id: &str, user_id: &str) {
        let request =
            TypingRequest { conversation_id: conversation_id.to_owned(), sender: SenderRef { id: user_id.to_owned() } };
        if let Err(error) = self.kommo.typing(scope_id, &request).await {
            tracing::warn!(scope_id, conversation_id, %error, "client typing not shown in Kommo; dropped");
        }
    }
}

/// How long a client's `typing.started` holds: its `ttl_ms` (at least 1, capped) or the default.
pub(crate) fn client_typing_ttl_ms(typing: &ClientTyping) -> Result<i64, ApiError> {
    match typing.ttl_ms {
        None => Ok(CLIENT_TYPING_DEFAULT_TTL_MS),
        Some(0) => Err(ApiError::bad_request("invalid_body", "ttl_ms must be at least 1")),
        Some(ttl) => Ok(i64::from(ttl).min(CLIENT_TYPING_MAX_TTL_MS)),
    }
}

pub(crate) fn store_fault(error: crate::store::StoreError) -> ApiError {
    tracing::error!(%error, "store failed");
    ApiError::internal()
}

/// A fresh Standard Webhooks message id for an event the bridge sends.
pub fn new_webhook_id() -> String {
    format!("msg_{}", hex::encode(crate::config::random_bytes::<12>()))
}
