//! A month of one account's traffic, from its profile, priced by service (see `bridge-cli cost`).
//!
//! A [`Profile`] says how an account's conversations go; [`monthly`] turns it into inbound events
//! a month of each [`EventKind`] and prices them with [`per_event`], so every figure follows
//! [`EVENT_COUNTS`] (the counts the amplification test asserts) and changes when it does. What
//! does not scale with events (the dashboard, the alarms, the custom metrics, the timer queue's
//! idle polling) is added as [`Fixed`].
//!
//! Left out: free tiers, data transfer, DynamoDB storage and point-in-time recovery (billed by
//! the GB stored, not by the event), SSM and KMS on cold starts, and what the cost table has no
//! row for: the widget's first `viewing` of an opening (which pushes `presence.changed`: it is
//! priced as a later one), reactions and edits (a message's worth each, and rare).

use super::*;

/// The month the figures are for.
pub const DAYS_PER_MONTH: f64 = 30.0;

/// Kommo re-sends its manager-typing webhook every 5 s while the manager types
/// (docs/openapi.yaml).
pub const MANAGER_TYPING_WEBHOOK_EVERY_S: f64 = 5.0;
/// How often the chat service sends `typing.started` while the client types. The contract only
/// asks for one before `ttl_ms` (6 s by default) lapses; half the default lease leaves a
/// late event room, so it is the model.
pub const CLIENT_TYPING_STARTED_EVERY_S: f64 = 3.0;
/// The chat service's `presence.heartbeat` while the client is online (the cadence the cost
/// table's coalesced heartbeat is measured at).
pub const CLIENT_HEARTBEAT_EVERY_S: f64 = 15.0;
/// The widget's `viewing` heartbeat while a conversation is open and its tab visible
/// (widget/script.js, `heartbeatMs`).
pub const WIDGET_HEARTBEAT_EVERY_S: f64 = 15.0;
/// The widget reads the client's presence when a conversation opens and then every 15 s while
/// it stays open (widget/script.js, `presenceMs`): per open second, the same as the heartbeat.
pub const WIDGET_PRESENCE_READ_EVERY_S: f64 = 15.0;
/// Kommo shows a client typing for 5 s per call; the bridge calls every 4 s while the client
/// types (shared/src/rules/typing.rs).
pub const CLIENT_TYPING_SHOWN_EVERY_S: f64 = 4.0;

/// The CloudWatch dashboard, a month.
pub const DASHBOARD_PER_MONTH: f64 = 3.00;
/// A standard-resolution alarm metric, a month: an alarm on one metric is one; an alarm on
/// metric math is billed one per metric it reads.
pub const ALARM_METRIC_PER_MONTH: f64 = 0.10;
/// Keep equal to the number of `AWS::CloudWatch::Alarm` resources in infra/template.yaml: a
/// test here counts them and fails when the two differ.
pub const ALARMS: u32 = 15;
/// What those alarms are billed as: one alarm metric for each single-metric alarm, and one per
/// `MetricStat` for each metric-math alarm (the chat-service and amojo failure rates read three
/// each). Kept equal to the template's by the same test.
pub const ALARM_METRICS: u32 = 19;
/// Distinct custom metric and dimension combinations written in steady operation, the
/// `KommoBridge` metrics of shared/src/app/metrics.rs: `Events` accepted, by the kind of each
/// event an account sends every hour (about 13: manager typing and messages, the widget's
/// viewing, left, read and presence read, the chat service's messages, statuses, typing
/// started and stopped, presence online, heartbeat and offline), `TypingStopLag` (1),
/// `RelayLatency` by peer (2), `StatusesReported` delivered and read (2), `OutboundCalls` ok to
/// the chat service and amojo (2). An estimate, and at most what is billed: CloudWatch bills
/// a custom metric by the hours it receives data, so the combinations written only on a
/// failure (5xx, refusals, dead letters, error statuses) cost in the hours they happen, and an
/// account quiet at night pays less for the rest.
pub const CUSTOM_METRICS: u32 = 20;
/// The timer queue's event source long-polls even when the queue is empty. Lambda scales an
/// idle SQS event source back to five pollers, and to two only when no maximum concurrency is
/// set; the template sets one (`TimerMaxConcurrency`), so five.
pub const IDLE_SQS_POLLERS: f64 = 5.0;
/// Each idle poll is a `ReceiveMessage` that waits up to 20 s (the longest long poll).
pub const LONG_POLL_WAIT_S: f64 = 20.0;

/// How one account's conversations go. Every rate is an average, so fractions are fine.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Profile {
    /// Conversations a day (default 100).
    pub conversations_per_day: f64,
    /// Messages in a conversation, both sides together (default 12).
    pub messages_per_conversation: f64,
    /// The share of those messages that managers send, 0 to 1 (default 0.5); the client sends
    /// the rest.
    pub manager_share: f64,
    /// How long a conversation is active, in minutes (default 20): what the typing shares are
    /// shares of.
    pub active_minutes: f64,
    /// The share of the active time managers spend typing, 0 to 1 (default 0.1). 0 for a
    /// channel not subscribed to Kommo's typing webhooks.
    pub manager_typing_share: f64,
    /// The share of the active time the client spends typing, 0 to 1 (default 0.1). 0 for a
    /// chat service that sends no typing.
    pub client_typing_share: f64,
    /// Minutes the client is online (heartbeating) in a conversation (default 20, the active
    /// time). 0 for a chat service that sends no presence.
    pub client_online_minutes: f64,
    /// Hours a day that managers, all together, have a conversation open in Kommo with the
    /// widget's tab visible (default 8: one manager's working day). Not per conversation: the
    /// widget's calls follow the managers' screen time, whether or not clients write.
    pub widget_hours_per_day: f64,
    /// How requests reach the functions (default the HTTP API, the template's default).
    pub endpoint: Endpoint,
    /// List prices (default US East, [`Prices::default`]).
    pub prices: Prices,
}

impl Default for Profile {
    fn default() -> Self {
        Self {
            conversations_per_day: 100.0,
            messages_per_conversation: 12.0,
            manager_share: 0.5,
            active_minutes: 20.0,
            manager_typing_share: 0.1,
            client_typing_share: 0.1,
            client_online_minutes: 20.0,
            widget_hours_per_day: 8.0,
            endpoint: Endpoint::HttpApi,
            prices: Prices::default(),
        }
    }
}

impl Profile {
    /// Inbound events of `kind` in a month. One conversation causes:
    ///
    /// - a manager typing lease start per manager message (typing comes in one burst before
    ///   each message), and a refresh per further 5 s of manager typing (Kommo's webhook every
    ///   5 s, the first of each burst being the start);
    /// - a manager message per manager message, and its `message.status` delivered and read;
    /// - a client typing lease start per client message, a `typing.started` per further 3 s of
    ///   client typing ([`CLIENT_TYPING_STARTED_EVERY_S`]), of which one per 4 s beyond the
    ///   lease's first two calls keeps Kommo's indicator up ([`CLIENT_TYPING_SHOWN_EVERY_S`]),
    ///   and a `typing.stopped` per burst;
    /// - a client message per client message;
    /// - while the client is online: a first heartbeat, then one every 15 s (coalesced), and a
    ///   `presence.offline` at the end;
    /// - the conversation opened once in the widget (`read`) and closed once (`left`).
    ///
    /// Managers' widget time, per second it is open: a `viewing` heartbeat and a presence read
    /// every 15 s each. With no messages on a side there is no typing on it to model.
    pub fn events_a_month(&self, kind: EventKind) -> f64 {
        let conversations = self.conversations_a_month();
        let manager_messages = self.messages_per_conversation * self.manager_share;
        let client_messages = self.messages_per_conversation * (1.0 - self.manager_share);
        let active_s = self.active_minutes * 60.0;
        let manager_typing =
            Typing::of(manager_messages, active_s * self.manager_typing_share, MANAGER_TYPING_WEBHOOK_EVERY_S);
        let client_typing_s = active_s * self.client_typing_share;
        let client_typing = Typing::of(client_messages, client_typing_s, CLIENT_TYPING_STARTED_EVERY_S);
        // Kommo is called every 4 s while the client types; a lease's start pays for the first
        // two calls (its own 6 s), and each further call comes with one of the repeats.
        let client_kept_up = (client_typing_s / CLIENT_TYPING_SHOWN_EVERY_S - 2.0 * client_typing.starts)
            .clamp(0.0, client_typing.repeats);
        let online_s = self.client_online_minutes * 60.0;
        let (first_heartbeats, later_heartbeats) =
            if online_s > 0.0 { (1.0, (online_s / CLIENT_HEARTBEAT_EVERY_S - 1.0).max(0.0)) } else { (0.0, 0.0) };
        let widget_s_a_month = self.widget_hours_per_day * 3600.0 * DAYS_PER_MONTH;
        match kind {
            EventKind::ManagerTypingStart => conversations * manager_typing.starts,
            EventKind::ManagerTypingRefresh => conversations * manager_typing.repeats,
            EventKind::ManagerMessage => conversations * manager_messages,
            EventKind::MessageStatus | EventKind::MessageStatusRead => conversations * manager_messages,
            EventKind::ClientTypingStart => conversations * client_typing.starts,
            EventKind::ClientTypingWithinLease => conversations * (client_typing.repeats - client_kept_up),
            EventKind::ClientTypingKeptUp => conversations * client_kept_up,
            // One at the end of each burst (a client's message also ends the lease by itself).
            EventKind::ClientTypingStopped => conversations * client_typing.starts,
            EventKind::ClientPresenceOffline => conversations * first_heartbeats,
            // The manager opens each conversation once and closes it once.
            EventKind::UiRead | EventKind::UiLeft => conversations,
            EventKind::ClientMessage => conversations * client_messages,
            EventKind::ClientHeartbeatFirst => conversations * first_heartbeats,
            EventKind::ClientHeartbeatCoalesced => conversations * later_heartbeats,
            EventKind::UiViewingHeartbeat => widget_s_a_month / WIDGET_HEARTBEAT_EVERY_S,
            EventKind::UiPresenceRead => widget_s_a_month / WIDGET_PRESENCE_READ_EVERY_S,
        }
    }

    pub fn conversations_a_month(&self) -> f64 {
        self.conversations_per_day * DAYS_PER_MONTH
    }
}

/// One side's typing in a conversation, as bursts, one before each of its messages: the first
/// event of a burst starts a lease, and every further `every_s` of typing sends another.
struct Typing {
    starts: f64,
    repeats: f64,
}

impl Typing {
    fn of(messages: f64, typing_s: f64, every_s: f64) -> Typing {
        if messages <= 0.0 || typing_s <= 0.0 {
            return Typing { starts: 0.0, repeats: 0.0 };
        }
        // A burst shorter than one interval still sends its start, so never fewer than that.
        Typing { starts: messages, repeats: (typing_s / every_s - messages).max(0.0) }
    }
}

/// One kind of event over the month.
#[derive(Debug, Clone, PartialEq)]
pub struct KindInMonth {
    pub kind: EventKind,
    /// What the cost table calls it.
    pub label: &'static str,
    pub events: f64,
    /// Dollars per million events of this kind.
    pub per_million: f64,
    /// Dollars a month.
    pub dollars: f64,
}

/// Dollars a month that do not scale with events.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Fixed {
    pub dashboard: f64,
    /// [`ALARM_METRICS`] alarm metrics.
    pub alarms: f64,
    /// [`CUSTOM_METRICS`] metrics (an estimate, at most what is billed).
    pub custom_metrics: f64,
    /// The timer queue's event source polling an empty queue.
    pub sqs_idle_polling: f64,
}

impl Fixed {
    fn of(prices: &Prices) -> Fixed {
        let idle_polls = IDLE_SQS_POLLERS * DAYS_PER_MONTH * 86_400.0 / LONG_POLL_WAIT_S;
        Fixed {
            dashboard: DASHBOARD_PER_MONTH,
            alarms: f64::from(ALARM_METRICS) * ALARM_METRIC_PER_MONTH,
            custom_metrics: f64::from(CUSTOM_METRICS) * prices.custom_metric_per_month,
            sqs_idle_polling: idle_polls * prices.sqs_requests_per_million / 1e6,
        }
    }

    /// The CloudWatch part: the dashboard, the alarms and the metrics.
    pub fn cloudwatch(&self) -> f64 {
        self.dashboard + self.alarms + self.custom_metrics
    }

    pub fn total(&self) -> f64 {
        self.cloudwatch() + self.sqs_idle_polling
    }
}

/// Dollars a month by AWS service, fixed costs included.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Services {
    pub api_gateway: f64,
    pub lambda: f64,
    pub dynamodb: f64,
    pub sqs: f64,
    /// Logs, with the dashboard, the alarms and the custom metrics.
    pub cloudwatch: f64,
}

impl Services {
    pub fn total(&self) -> f64 {
        self.api_gateway + self.lambda + self.dynamodb + self.sqs + self.cloudwatch
    }
}

/// A month of one profile's traffic, priced.
#[derive(Debug, Clone, PartialEq)]
pub struct Monthly {
    /// Every kind of event, in the cost table's order.
    pub kinds: Vec<KindInMonth>,
    /// What the events cost, by service.
    pub variable: ByService,
    pub fixed: Fixed,
    pub conversations: f64,
}

impl Monthly {
    /// Inbound requests a month: each event is one.
    pub fn requests(&self) -> f64 {
        self.kinds.iter().map(|kind| kind.events).sum()
    }

    pub fn by_service(&self) -> Services {
        Services {
            api_gateway: self.variable.api_gateway,
            lambda: self.variable.lambda,
            dynamodb: self.variable.dynamodb,
            sqs: self.variable.sqs + self.fixed.sqs_idle_polling,
            cloudwatch: self.variable.cloudwatch_logs + self.fixed.cloudwatch(),
        }
    }

    pub fn total(&self) -> f64 {
        self.variable.total() + self.fixed.total()
    }

    /// The total spread over the month's conversations (the fixed part and the widget's
    /// included); none without conversations.
    pub fn per_conversation(&self) -> Option<f64> {
        (self.conversations > 0.0).then(|| self.total() / self.conversations)
    }
}

/// `profile`'s month: events of each kind, priced by [`per_event`], plus the fixed costs.
pub fn monthly(profile: &Profile) -> Monthly {
    let mut variable = ByService::default();
    let kinds = EVENT_COUNTS
        .iter()
        .map(|&(kind, label, _)| {
            let events = profile.events_a_month(kind);
            let one = per_event(counts(kind), profile.endpoint, &profile.prices);
            variable = variable + one.scaled(events);
            KindInMonth { kind, label, events, per_million: one.total() * 1e6, dollars: one.total() * events }
        })
        .collect();
    Monthly { kinds, variable, fixed: Fixed::of(&profile.prices), conversations: profile.conversations_a_month() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
    }

    fn events(month: &Monthly, kind: EventKind) -> f64 {
        month.kinds.iter().find(|k| k.kind == kind).expect("every kind is in the month").events
    }

    #[test]
    fn the_totals_are_the_sums_of_their_parts() {
        let month = monthly(&Profile::default());
        let by_kind: f64 = month.kinds.iter().map(|kind| kind.dollars).sum();
        assert!(close(by_kind, month.variable.total()), "{by_kind} {}", month.variable.total());
        assert!(close(month.by_service().total(), month.total()));
        assert!(close(month.variable.total() + month.fixed.total(), month.total()));
        assert!(close(month.per_conversation().unwrap() * month.conversations, month.total()));
        assert_eq!(month.kinds.len(), EVENT_COUNTS.len());
    }

    #[test]
    fn doubling_the_traffic_doubles_the_variable_part_and_leaves_the_fixed() {
        let base = Profile::default();
        let one = monthly(&base);
        // Conversations alone: what they drive doubles; the widget follows managers' time.
        let twice = monthly(&Profile { conversations_per_day: base.conversations_per_day * 2.0, ..base });
        for (a, b) in one.kinds.iter().zip(&twice.kinds) {
            let widget = matches!(a.kind, EventKind::UiViewingHeartbeat | EventKind::UiPresenceRead);
            let expected = if widget { a.events } else { a.events * 2.0 };
            assert!(close(b.events, expected), "{:?}: {} then {}", a.kind, a.events, b.events);
        }
        assert_eq!(one.fixed, twice.fixed);
        // Conversations and widget hours together: the whole variable part doubles.
        let both = monthly(&Profile {
            conversations_per_day: base.conversations_per_day * 2.0,
            widget_hours_per_day: base.widget_hours_per_day * 2.0,
            ..base
        });
        assert!(close(both.variable.total(), one.variable.total() * 2.0));
        assert!(close(both.total() - both.fixed.total(), 2.0 * (one.total() - one.fixed.total())));
        assert_eq!(one.fixed, both.fixed);
    }

    #[test]
    fn function_urls_save_the_http_api_charge_and_access_log_line_of_each_request() {
        let prices = Prices::default();
        let http_api = monthly(&Profile::default());
        let function_url = monthly(&Profile { endpoint: Endpoint::FunctionUrl, ..Profile::default() });
        let requests = http_api.requests();
        assert!(requests > 0.0);
        let request_charge = requests * prices.http_api_per_million / 1e6;
        let access_logs = requests * ACCESS_LOG_BYTES_PER_REQUEST as f64 / 1e9 * prices.logs_ingested_per_gb;
        let saved = http_api.total() - function_url.total();
        assert!(close(saved, request_charge + access_logs), "saved {saved} on {requests} requests");
        assert!(close(http_api.by_service().api_gateway, requests * 1.00 / 1e6));
        assert_eq!(function_url.by_service().api_gateway, 0.0);
        assert_eq!(http_api.fixed, function_url.fixed);
    }

    #[test]
    fn no_traffic_costs_only_the_fixed_part() {
        let quiet = Profile { conversations_per_day: 0.0, widget_hours_per_day: 0.0, ..Profile::default() };
        let month = monthly(&quiet);
        assert_eq!(month.requests(), 0.0);
        assert_eq!(month.variable.total(), 0.0);
        assert_eq!(month.total(), month.fixed.total());
        assert!(month.total() > 0.0);
        assert_eq!(month.per_conversation(), None);
    }

    #[test]
    fn a_small_month_counted_by_hand() {
        // One conversation a day: 4 messages, 2 each side; 10 active minutes (600 s); managers
        // type 10% (60 s), the client 5% (30 s); the client online 5 minutes; half an hour of
        // widget a day.
        let profile = Profile {
            conversations_per_day: 1.0,
            messages_per_conversation: 4.0,
            manager_share: 0.5,
            active_minutes: 10.0,
            manager_typing_share: 0.1,
            client_typing_share: 0.05,
            client_online_minutes: 5.0,
            widget_hours_per_day: 0.5,
            ..Profile::default()
        };
        let month = monthly(&profile);
        // Per conversation, then times 30 days.
        let expected = [
            (EventKind::ManagerTypingStart, 2.0),        // one per manager message
            (EventKind::ManagerTypingRefresh, 10.0),     // 60 s / 5 s = 12 webhooks, 2 of them starts
            (EventKind::ManagerMessage, 2.0),            //
            (EventKind::MessageStatus, 2.0),             // delivered, of each
            (EventKind::MessageStatusRead, 2.0),         // and read
            (EventKind::ClientTypingStart, 2.0),         // one per client message
            (EventKind::ClientTypingWithinLease, 4.5),   // 30 s / 3 s = 10 events, 2 starts, 3.5 keeping up
            (EventKind::ClientTypingKeptUp, 3.5),        // 30 s / 4 s = 7.5 calls to Kommo, 4 paid by the starts
            (EventKind::ClientTypingStopped, 2.0),       // one per burst
            (EventKind::ClientMessage, 2.0),             //
            (EventKind::ClientHeartbeatFirst, 1.0),      //
            (EventKind::ClientHeartbeatCoalesced, 19.0), // 300 s / 15 s = 20 heartbeats, 1 the first
            (EventKind::ClientPresenceOffline, 1.0),     //
            (EventKind::UiRead, 1.0),                    // the conversation opened once
            (EventKind::UiLeft, 1.0),                    // and closed once
        ];
        for (kind, per_conversation) in expected {
            assert!(close(events(&month, kind), per_conversation * 30.0), "{kind:?}: {}", events(&month, kind));
        }
        // 1,800 s of widget a day, a heartbeat and a read every 15 s: 120 each a day.
        assert!(close(events(&month, EventKind::UiViewingHeartbeat), 120.0 * 30.0));
        assert!(close(events(&month, EventKind::UiPresenceRead), 120.0 * 30.0));
        assert!(close(month.requests(), 55.0 * 30.0 + 7_200.0));
        // Fixed: $3.00 dashboard, $0.10 an alarm metric, $0.30 a custom metric, 5 pollers polling
        // every 20 s for 30 days (648,000 receives at $0.40 per million).
        let fixed = month.fixed;
        assert!(close(fixed.dashboard, 3.00));
        assert!(close(fixed.alarms, f64::from(ALARM_METRICS) * 0.10));
        assert!(close(fixed.custom_metrics, f64::from(CUSTOM_METRICS) * 0.30));
        assert!(close(fixed.sqs_idle_polling, 648_000.0 * 0.40 / 1e6));
        // Each kind priced by the cost table's own function.
        for kind in &month.kinds {
            let one = per_event(counts(kind.kind), Endpoint::HttpApi, &Prices::default()).total();
            assert!(close(kind.dollars, one * kind.events), "{:?}", kind.kind);
        }
    }

    #[test]
    fn no_typing_or_messages_means_no_typing_events() {
        let silent = Profile { manager_typing_share: 0.0, client_typing_share: 0.0, ..Profile::default() };
        let no_messages = Profile { messages_per_conversation: 0.0, ..Profile::default() };
        for profile in [silent, no_messages] {
            let month = monthly(&profile);
            for kind in [
                EventKind::ManagerTypingStart,
                EventKind::ManagerTypingRefresh,
                EventKind::ClientTypingStart,
                EventKind::ClientTypingWithinLease,
            ] {
                assert_eq!(events(&month, kind), 0.0, "{kind:?}");
            }
        }
    }

    #[test]
    fn the_alarms_are_the_templates() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../infra/template.yaml");
        let template = std::fs::read_to_string(path).expect("infra/template.yaml is readable");
        // Each resource of the Resources section: its name (two spaces in), its type (four
        // spaces in) and how many metrics it reads by `MetricStat` (metric math).
        let mut resources: Vec<(String, String, u32)> = Vec::new();
        let mut in_resources = false;
        for line in template.lines() {
            if !line.starts_with([' ', '#']) && !line.is_empty() {
                in_resources = line.trim_end() == "Resources:";
                continue;
            }
            if !in_resources {
                continue;
            }
            let header = line.strip_prefix("  ").filter(|rest| !rest.starts_with([' ', '#']));
            if let Some(name) = header.and_then(|rest| rest.trim_end().strip_suffix(':')) {
                resources.push((name.to_owned(), String::new(), 0));
            } else if let Some((_, kind, metric_stats)) = resources.last_mut() {
                if let Some(value) = line.strip_prefix("    Type:") {
                    *kind = value.split('#').next().unwrap_or("").trim().trim_matches(['"', '\'']).to_owned();
                } else if line.trim() == "MetricStat:" {
                    *metric_stats += 1;
                }
            }
        }
        let alarms: Vec<_> = resources.iter().filter(|(_, kind, _)| kind == "AWS::CloudWatch::Alarm").collect();
        let billed: u32 = alarms.iter().map(|(_, _, metric_stats)| (*metric_stats).max(1)).sum();
        let names: Vec<_> = alarms.iter().map(|(name, _, _)| name.as_str()).collect();
        assert_eq!(
            (alarms.len(), billed),
            (ALARMS as usize, ALARM_METRICS),
            "infra/template.yaml has {} alarms billed as {billed} alarm metrics ({names:?}): \
             set ALARMS and ALARM_METRICS in bench/cost-model/src/profile.rs to match",
            alarms.len()
        );
    }
}
