//! The queued-work dispatcher: runs work that fell due (timers and queued deliveries) through
//! the queued half of its flow, one record or a batch of them (what the `typing-expiry` function
//! receives from SQS, in the runtime's own event types there), with per-record failures. One
//! span per piece of work names its kind and ids.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tracing::Instrument;

use crate::flows::FlowError;
use crate::flows::chat_delivery::ChatDelivery;
use crate::flows::client_messages::ClientContentToKommo;
use crate::flows::client_profiles::ClientProfiles;
use crate::flows::client_typing::ClientTyping;
use crate::flows::delivery_status::StatusReports;
use crate::flows::installs::Installs;
use crate::flows::manager_messages::{ManagerMessages, MessageRelay, Relay};
use crate::flows::manager_presence::ManagerPresenceExpiry;
use crate::flows::manager_typing::ManagerTypingExpiry;
use crate::flows::managers::ManagerDirectoryRefresh;
use crate::ports::timers::{DueWork, DueWorkRunner, Timers};
use crate::time::Clock;

/// The installs' queued work, as the dispatcher runs it (where installs are configured).
#[derive(Clone)]
pub struct InstallWork {
    pub installs: Installs,
    pub managers: Arc<ManagerDirectoryRefresh>,
}

/// The queued half of every flow.
#[derive(Clone)]
pub struct Dispatcher {
    pub manager_typing: ManagerTypingExpiry,
    pub manager_presence: ManagerPresenceExpiry,
    pub client_typing: ClientTyping,
    pub delivery: ChatDelivery,
    /// A manager's message whose webhook could not record it in time, accepted here.
    pub accept: ManagerMessages,
    pub relay: MessageRelay,
    pub reports: StatusReports,
    pub into_kommo: ClientContentToKommo,
    /// Client profiles into Kommo's contacts, where Kommo's REST API is configured.
    pub profiles: Option<ClientProfiles>,
    /// Installs' work (a connect not finished in time, the token sweep, the managers' read, a
    /// disable's confirmation), where installs are configured.
    pub installs: Option<InstallWork>,
    /// Where work out of time goes back ([`Self::run_batch_within`]).
    pub hand_back: Arc<dyn Timers>,
    pub clock: Arc<dyn Clock>,
}

impl Dispatcher {
    /// Runs one piece of due work. An `Err` is transient (store or queue unavailable): the
    /// work is delivered again (SQS redelivery, or the in-process loop's retry).
    pub async fn run(&self, work: DueWork) -> Result<(), FlowError> {
        let span = work_span(&work);
        async move {
            match work {
                DueWork::ManagerTypingCheck { scope_id, conversation_id, manager_id } => {
                    self.manager_typing.check(&scope_id, &conversation_id, &manager_id).await
                }
                DueWork::ManagerPresenceCheck { scope_id, conversation_id, manager_id } => {
                    self.manager_presence.check(&scope_id, &conversation_id, &manager_id).await
                }
                DueWork::ClientTypingRefresh { scope_id, conversation_id, user_id } => {
                    self.client_typing.refresh(&scope_id, &conversation_id, &user_id).await
                }
                DueWork::DeliverChatEvent { event, webhook_id, attempt } => {
                    self.delivery.deliver(event, webhook_id, attempt).await
                }
                DueWork::AcceptManagerMessage { scope_id, message, received_at_ms } => {
                    self.accept.accept(&scope_id, &message, received_at_ms).await
                }
                DueWork::RelayManagerMessage { scope_id, kommo_msgid, event, webhook_id, attempt, received_at_ms } => {
                    let (scope_id, kommo_msgid) = (scope_id.as_str(), kommo_msgid.as_str());
                    let relay = Relay { scope_id, kommo_msgid, event, webhook_id, attempt, received_at_ms };
                    self.relay.relay(relay).await
                }
                DueWork::ReportDeliveryStatus { scope_id, request, attempt } => {
                    self.reports.report(&scope_id, request, attempt).await
                }
                DueWork::ImportClientMessage { message, attempt, received_at_ms } => {
                    self.into_kommo.import(&message, attempt, received_at_ms).await
                }
                DueWork::EditClientMessage { edit, attempt, waits } => {
                    self.into_kommo.edit(&edit, attempt, waits).await
                }
                DueWork::SendClientReaction { reaction, added, attempt, waits } => {
                    self.into_kommo.react(&reaction, added, attempt, waits).await
                }
                DueWork::UpdateClientProfile { profile, attempt, received_at_ms } => match &self.profiles {
                    Some(profiles) => profiles.update(&profile, attempt, received_at_ms).await,
                    None => {
                        // Accepted where installs are configured, run where they are not: the
                        // deployment's queued work lacks KOMMO_CLIENT_ID and the token key.
                        tracing::error!(
                            "a client profile update, but Kommo's REST API is not configured here; dropped"
                        );
                        Ok(())
                    }
                },
                DueWork::FinishInstall { .. }
                | DueWork::SweepAccountTokens
                | DueWork::RefreshManagers { .. }
                | DueWork::ConfirmDisable { .. } => self.run_install_work(work).await,
            }
        }
        .instrument(span)
        .await
    }

    /// Installs' queued work; without installs configured here it cannot be done, and is
    /// dropped (logged): it would fail the same way every time.
    async fn run_install_work(&self, work: DueWork) -> Result<(), FlowError> {
        let Some(install) = &self.installs else {
            tracing::error!(work = work.kind(), "installs' work, but installs are not configured here; dropped");
            return Ok(());
        };
        match work {
            DueWork::FinishInstall { host, account_id, sealed_tokens, attempt } => {
                install.installs.finish(&host, account_id, sealed_tokens.as_deref(), attempt).await
            }
            DueWork::SweepAccountTokens => install.installs.sweep().await,
            DueWork::RefreshManagers { scope_id, attempt } => install.managers.run_queued(&scope_id, attempt).await,
            DueWork::ConfirmDisable { account_id, attempt } => {
                install.installs.confirm_disable(account_id, attempt).await
            }
            _ => Ok(()),
        }
    }

    /// Runs a batch concurrently and returns the message ids of the records to deliver again. A
    /// record that cannot be parsed is logged (by id, never its body) and reported failed, so
    /// the queue's redrive moves it to the dead-letter queue after a few receives instead of
    /// retrying it forever; a transient failure is reported and retried. Everything else
    /// succeeds.
    pub async fn run_batch(&self, records: Vec<QueuedRecord>) -> Vec<String> {
        self.run_batch_within(records, None).await
    }

    /// [`Self::run_batch`] within `budget`, the time the invocation has left before Lambda
    /// would end it. Work still running when the budget runs out is handed back: a copy of it
    /// is queued to run at once and its record reported done. Killed at its timeout instead,
    /// the whole batch would come back only after the queue's visibility timeout (minutes: an
    /// owed `typing.stopped` that late). The copy left half-way is what a kill leaves, and the
    /// work's claims and lanes make its second run safe.
    pub async fn run_batch_within(&self, records: Vec<QueuedRecord>, budget: Option<Duration>) -> Vec<String> {
        let runs = records.into_iter().map(|record| async move {
            let work: DueWork = match serde_json::from_str(&record.body) {
                Ok(work) => work,
                Err(error) => {
                    tracing::error!(message_id = %record.message_id.escape_debug(), %error, "unreadable due work");
                    return Some(record.message_id);
                }
            };
            let kind = work.kind();
            let run = match budget {
                None => self.run(work).await,
                Some(budget) => match tokio::time::timeout(budget, self.run(work.clone())).await {
                    Ok(run) => run,
                    Err(_) => {
                        tracing::warn!(work = kind, "out of time; handed back to the queue");
                        self.hand_back.schedule(work, self.clock.now_ms()).await.map_err(FlowError::from)
                    }
                },
            };
            match run {
                Ok(()) => None,
                Err(error) => {
                    tracing::warn!(message_id = %record.message_id.escape_debug(), work = kind, %error, "due work failed; redelivered later");
                    Some(record.message_id)
                }
            }
        });
        futures_util::future::join_all(runs).await.into_iter().flatten().collect()
    }
}

/// One record of a batch from the timer queue: its message id, and its body, the work as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedRecord {
    pub message_id: String,
    pub body: String,
}

#[async_trait]
impl DueWorkRunner for Dispatcher {
    type Error = FlowError;
    async fn run_due(&self, work: DueWork) -> Result<(), FlowError> {
        self.run(work).await
    }
}

/// The span of one piece of due work: its kind and the ids it names (never a message's text).
fn work_span(work: &DueWork) -> tracing::Span {
    let span = tracing::info_span!(
        "due_work",
        kind = work.kind(),
        scope_id = tracing::field::Empty,
        conversation_id = tracing::field::Empty,
        msgid = tracing::field::Empty,
        attempt = tracing::field::Empty,
    );
    let (scope_id, conversation_id, msgid, attempt) = match work {
        DueWork::ManagerTypingCheck { scope_id, conversation_id, .. }
        | DueWork::ManagerPresenceCheck { scope_id, conversation_id, .. }
        | DueWork::ClientTypingRefresh { scope_id, conversation_id, .. } => {
            (scope_id.as_str(), Some(conversation_id.as_str()), None, None)
        }
        DueWork::DeliverChatEvent { event, attempt, .. } => {
            (event.scope_id(), Some(event.conversation_id()), event.msgid(), Some(*attempt))
        }
        DueWork::AcceptManagerMessage { scope_id, message, .. } => {
            (scope_id.as_str(), Some(message.conversation.integration_id()), message.message.id.as_deref(), None)
        }
        DueWork::RelayManagerMessage { scope_id, kommo_msgid, event, attempt, .. } => {
            (scope_id.as_str(), Some(event.conversation_id()), Some(kommo_msgid.as_str()), Some(*attempt))
        }
        DueWork::ReportDeliveryStatus { scope_id, request, attempt } => {
            (scope_id.as_str(), None, Some(request.msgid.as_str()), Some(*attempt))
        }
        DueWork::ImportClientMessage { message, attempt, .. } => (
            message.scope_id.as_str(),
            Some(message.conversation_id.as_str()),
            Some(message.msgid.as_str()),
            Some(*attempt),
        ),
        DueWork::EditClientMessage { edit, attempt, .. } => {
            (edit.scope_id.as_str(), Some(edit.conversation_id.as_str()), Some(edit.msgid.as_str()), Some(*attempt))
        }
        DueWork::SendClientReaction { reaction, attempt, .. } => {
            (reaction.scope_id.as_str(), Some(reaction.conversation_id.as_str()), reaction.message.id(), Some(*attempt))
        }
        DueWork::UpdateClientProfile { profile, attempt, .. } => {
            (profile.scope_id.as_str(), Some(profile.conversation_id.as_str()), None, Some(*attempt))
        }
        DueWork::RefreshManagers { scope_id, attempt } => (scope_id.as_str(), None, None, Some(*attempt)),
        DueWork::FinishInstall { attempt, .. } | DueWork::ConfirmDisable { attempt, .. } => {
            ("", None, None, Some(*attempt))
        }
        DueWork::SweepAccountTokens => ("", None, None, None),
    };
    span.record("scope_id", crate::rules::id_checks::for_log(scope_id));
    if let Some(conversation_id) = conversation_id {
        span.record("conversation_id", crate::rules::id_checks::for_log(conversation_id));
    }
    if let Some(msgid) = msgid {
        span.record("msgid", crate::rules::id_checks::for_log(msgid));
    }
    if let Some(attempt) = attempt {
        span.record("attempt", attempt);
    }
    span
}
