//! `bridge-cli cost`: what one account's traffic costs a month on AWS, by service. The profile
//! comes from flags (each with `Profile`'s default); the pricing is `cost_model::profile`,
//! from the same counts the amplification test asserts, so the figures cannot drift from the
//! handlers.

use cost_model::profile::{
    self, ALARM_METRICS, ALARMS, CUSTOM_METRICS, IDLE_SQS_POLLERS, LONG_POLL_WAIT_S, Monthly, Profile,
};
use cost_model::{Endpoint, Prices};

use crate::Failure;
use crate::args::{self, Options, UsageError};

/// Every flag `cost` takes; each may be left out.
const FLAGS: &[&str] = &[
    "conversations-per-day",
    "messages-per-conversation",
    "manager-share",
    "active-minutes",
    "manager-typing-share",
    "client-typing-share",
    "client-online-minutes",
    "widget-hours-per-day",
    "endpoint",
    "price-http-api-per-million",
    "price-lambda-requests-per-million",
    "price-lambda-gb-second",
    "price-dynamodb-writes-per-million",
    "price-dynamodb-reads-per-million",
    "price-sqs-per-million",
    "price-logs-per-gb",
    "price-custom-metric-per-month",
];

pub fn run(argv: &[String]) -> Result<(), Failure> {
    let profile = profile_from(&args::parse(argv, FLAGS)?)?;
    print!("{}", report(&profile));
    Ok(())
}

/// The profile the flags give, the default for each one left out.
fn profile_from(options: &Options) -> Result<Profile, UsageError> {
    let defaults = Profile::default();
    let prices = defaults.prices;
    Ok(Profile {
        conversations_per_day: amount(options, "conversations-per-day", defaults.conversations_per_day)?,
        messages_per_conversation: amount(options, "messages-per-conversation", defaults.messages_per_conversation)?,
        manager_share: share(options, "manager-share", defaults.manager_share)?,
        active_minutes: amount(options, "active-minutes", defaults.active_minutes)?,
        manager_typing_share: share(options, "manager-typing-share", defaults.manager_typing_share)?,
        client_typing_share: share(options, "client-typing-share", defaults.client_typing_share)?,
        client_online_minutes: amount(options, "client-online-minutes", defaults.client_online_minutes)?,
        widget_hours_per_day: amount(options, "widget-hours-per-day", defaults.widget_hours_per_day)?,
        endpoint: endpoint(options, defaults.endpoint)?,
        prices: Prices {
            http_api_per_million: amount(options, "price-http-api-per-million", prices.http_api_per_million)?,
            lambda_requests_per_million: amount(
                options,
                "price-lambda-requests-per-million",
                prices.lambda_requests_per_million,
            )?,
            lambda_arm_gb_second: amount(options, "price-lambda-gb-second", prices.lambda_arm_gb_second)?,
            dynamodb_writes_per_million: amount(
                options,
                "price-dynamodb-writes-per-million",
                prices.dynamodb_writes_per_million,
            )?,
            dynamodb_reads_per_million: amount(
                options,
                "price-dynamodb-reads-per-million",
                prices.dynamodb_reads_per_million,
            )?,
            sqs_requests_per_million: amount(options, "price-sqs-per-million", prices.sqs_requests_per_million)?,
            logs_ingested_per_gb: amount(options, "price-logs-per-gb", prices.logs_ingested_per_gb)?,
            custom_metric_per_month: amount(options, "price-custom-metric-per-month", prices.custom_metric_per_month)?,
        },
    })
}

/// A number of at least 0 (a count, a duration, a price), or `default` when not given.
fn amount(options: &Options, name: &str, default: f64) -> Result<f64, UsageError> {
    let Some(text) = options.non_empty(name)? else { return Ok(default) };
    text.parse::<f64>()
        .ok()
        .filter(|value| value.is_finite() && *value >= 0.0)
        .ok_or_else(|| UsageError(format!("--{name} must be a number of at least 0, not {text:?}")))
}

/// A share from 0 to 1, or `default` when not given.
fn share(options: &Options, name: &str, default: f64) -> Result<f64, UsageError> {
    let value = amount(options, name, default)?;
    if value > 1.0 {
        return Err(UsageError(format!("--{name} is a share from 0 to 1 (0.25 for a quarter), not {value}")));
    }
    Ok(value)
}

fn endpoint(options: &Options, default: Endpoint) -> Result<Endpoint, UsageError> {
    match options.non_empty("endpoint")? {
        None => Ok(default),
        Some("http-api") => Ok(Endpoint::HttpApi),
        Some("function-url") => Ok(Endpoint::FunctionUrl),
        Some(other) => Err(UsageError(format!("--endpoint is http-api or function-url, not {other:?}"))),
    }
}

fn endpoint_name(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::HttpApi => "http-api",
        Endpoint::FunctionUrl => "function-url",
    }
}

/// The report `cost` prints: the profile as read, the month's events by kind, the dollars by
/// service, the fixed costs, the total and the total with the other endpoint.
fn report(profile: &Profile) -> String {
    let month = profile::monthly(profile);
    let days = profile::DAYS_PER_MONTH;
    let mut lines = vec![
        format!("A {days}-day month of one account's traffic, priced from the cost table (shared/src/cost)."),
        String::new(),
    ];
    for section in [profile_lines(profile), event_lines(&month), service_lines(&month), fixed_lines(&month)] {
        lines.extend(section);
        lines.push(String::new());
    }
    lines.push(format!("total: ${} a month", dollars(month.total())));
    lines.push(match month.per_conversation() {
        // Fractions of a cent each: a thousand conversations reads better.
        Some(each) => format!(
            "per conversation: ${each:.5}, ${} per thousand ({} conversations a month, fixed costs and the widget included)",
            dollars(each * 1000.0),
            whole(month.conversations)
        ),
        None => "per conversation: none (no conversations)".to_owned(),
    });
    let (other, name) = match profile.endpoint {
        Endpoint::HttpApi => (Endpoint::FunctionUrl, "function URLs"),
        Endpoint::FunctionUrl => (Endpoint::HttpApi, "the HTTP API"),
    };
    let other_total = profile::monthly(&Profile { endpoint: other, ..*profile }).total();
    lines.push(format!("with {name}: ${} a month", dollars(other_total)));
    lines.join("\n") + "\n"
}

fn profile_lines(profile: &Profile) -> Vec<String> {
    let prices = &profile.prices;
    // To a hundredth of a percent: 0.07 is 7%, not the 7.000000000000001% of its binary form.
    let percent = |share: f64| format!("{}%", trimmed((share * 10_000.0).round() / 100.0));
    vec![
        "Profile".to_owned(),
        format!("  conversations a day            {}", trimmed(profile.conversations_per_day)),
        format!(
            "  messages per conversation      {}, {} by managers",
            trimmed(profile.messages_per_conversation),
            percent(profile.manager_share)
        ),
        format!(
            "  active minutes                 {}, managers typing {} of it, the client {}",
            trimmed(profile.active_minutes),
            percent(profile.manager_typing_share),
            percent(profile.client_typing_share)
        ),
        format!("  client online minutes          {}", trimmed(profile.client_online_minutes)),
        format!("  widget hours a day             {}", trimmed(profile.widget_hours_per_day)),
        format!("  endpoint                       {}", endpoint_name(profile.endpoint)),
        format!(
            "  prices ($)                     HTTP API {}/M requests; Lambda {}/M requests, {}/GB-second",
            trimmed(prices.http_api_per_million),
            trimmed(prices.lambda_requests_per_million),
            trimmed(prices.lambda_arm_gb_second),
        ),
        format!(
            "                                 DynamoDB {}/M writes, {}/M reads; SQS {}/M requests; logs {}/GB; \
             custom metric {}/month",
            trimmed(prices.dynamodb_writes_per_million),
            trimmed(prices.dynamodb_reads_per_million),
            trimmed(prices.sqs_requests_per_million),
            trimmed(prices.logs_ingested_per_gb),
            trimmed(prices.custom_metric_per_month),
        ),
    ]
}

fn event_lines(month: &Monthly) -> Vec<String> {
    let width = month.kinds.iter().map(|kind| kind.label.len()).max().unwrap_or(0);
    let mut lines =
        vec![format!("{:<width$} {:>13} {:>10} {:>11}", "Events a month", "events", "$ per 1M", "$ a month")];
    for kind in &month.kinds {
        lines.push(format!(
            "{:<width$} {:>13} {:>10.2} {:>11}",
            kind.label,
            whole(kind.events),
            kind.per_million,
            dollars(kind.dollars)
        ));
    }
    lines.push(format!(
        "{:<width$} {:>13} {:>10} {:>11}",
        "all events",
        whole(month.requests()),
        "",
        dollars(month.variable.total())
    ));
    lines
}

fn service_lines(month: &Monthly) -> Vec<String> {
    let (variable, fixed, all) = (&month.variable, &month.fixed, month.by_service());
    let row = |name: &str, traffic: f64, fixed: f64, total: f64| {
        format!("{name:<26} {:>11} {:>9} {:>11}", dollars(traffic), dollars(fixed), dollars(total))
    };
    vec![
        format!("{:<26} {:>11} {:>9} {:>11}", "$ a month by AWS service", "traffic", "fixed", "total"),
        row("API Gateway (HTTP API)", variable.api_gateway, 0.0, all.api_gateway),
        row("Lambda", variable.lambda, 0.0, all.lambda),
        row("DynamoDB", variable.dynamodb, 0.0, all.dynamodb),
        row("SQS", variable.sqs, fixed.sqs_idle_polling, all.sqs),
        row("CloudWatch", variable.cloudwatch_logs, fixed.cloudwatch(), all.cloudwatch),
        row("all services", variable.total(), fixed.total(), all.total()),
    ]
}

fn fixed_lines(month: &Monthly) -> Vec<String> {
    let fixed = &month.fixed;
    let row = |name: String, value: f64| format!("  {name:<58} {:>9}", dollars(value));
    vec![
        "Fixed costs a month".to_owned(),
        row("CloudWatch dashboard".to_owned(), fixed.dashboard),
        row(format!("CloudWatch alarms ({ALARMS}, billed as {ALARM_METRICS} alarm metrics)"), fixed.alarms),
        row(format!("custom metrics ({CUSTOM_METRICS}, estimated; billed by hours with data)"), fixed.custom_metrics),
        row(
            format!(
                "SQS idle long polling ({} pollers, {} s polls)",
                trimmed(IDLE_SQS_POLLERS),
                trimmed(LONG_POLL_WAIT_S)
            ),
            fixed.sqs_idle_polling,
        ),
        row("fixed".to_owned(), fixed.total()),
    ]
}

/// Dollars to the cent, with thousands separators.
fn dollars(value: f64) -> String {
    let cents = (value * 100.0).round() as u64;
    format!("{}.{:02}", grouped(cents / 100), cents % 100)
}

/// A count rounded to a whole number, with thousands separators (the model's averages are
/// fractional; nobody is billed for half an event).
fn whole(value: f64) -> String {
    grouped(value.round() as u64)
}

fn grouped(value: u64) -> String {
    if value < 1000 { value.to_string() } else { format!("{},{:03}", grouped(value / 1000), value % 1000) }
}

/// A number as given: no trailing zeros (0.1, 20, 0.0000133334).
fn trimmed(value: f64) -> String {
    format!("{value}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(args: &[&str]) -> Result<Profile, UsageError> {
        let argv: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        profile_from(&args::parse(&argv, FLAGS)?)
    }

    #[test]
    fn no_flags_is_the_default_profile() {
        assert_eq!(parsed(&[]).unwrap(), Profile::default());
    }

    #[test]
    fn flags_set_the_profile_and_its_prices() {
        let profile = parsed(&[
            "--conversations-per-day",
            "5000",
            "--manager-share=0.6",
            "--endpoint",
            "function-url",
            "--price-sqs-per-million",
            "0.5",
        ])
        .unwrap();
        assert_eq!(profile.conversations_per_day, 5000.0);
        assert_eq!(profile.manager_share, 0.6);
        assert_eq!(profile.endpoint, Endpoint::FunctionUrl);
        assert_eq!(profile.prices.sqs_requests_per_million, 0.5);
        assert_eq!(profile.messages_per_conversation, Profile::default().messages_per_conversation);
    }

    #[test]
    fn bad_values_are_refused_by_name() {
        for (args, named) in [
            (&["--conversations-per-day", "many"][..], "--conversations-per-day"),
            (&["--conversations-per-day", "-3"], "--conversations-per-day"),
            (&["--active-minutes", "inf"], "--active-minutes"),
            (&["--manager-share", "1.5"], "--manager-share"),
            (&["--client-typing-share", "NaN"], "--client-typing-share"),
            (&["--endpoint", "alb"], "--endpoint"),
            (&["--price-logs-per-gb", ""], "--price-logs-per-gb"),
            (&["--messages"], "--messages"),
        ] {
            let error = parsed(args).expect_err(&format!("{args:?} is refused"));
            assert!(error.0.contains(named), "{args:?}: {}", error.0);
        }
    }

    #[test]
    fn a_refused_value_is_a_usage_failure() {
        let argv = vec!["--manager-share".to_owned(), "2".to_owned()];
        // Usage failures exit 2 with the usage, as for every other command.
        assert!(matches!(run(&argv), Err(Failure::Usage(message)) if message.contains("--manager-share")));
    }

    #[test]
    fn the_report_shows_the_profile_every_kind_the_services_and_both_totals() {
        let profile = Profile { conversations_per_day: 50.0, ..Profile::default() };
        let text = report(&profile);
        let month = profile::monthly(&profile);
        assert!(text.contains("conversations a day            50\n"), "{text}");
        for (_, label, _) in cost_model::EVENT_COUNTS {
            assert!(text.contains(label), "{label} missing:\n{text}");
        }
        for service in ["API Gateway", "Lambda", "DynamoDB", "SQS", "CloudWatch", "all services"] {
            assert!(text.contains(service), "{service} missing:\n{text}");
        }
        assert!(text.contains(&format!("total: ${} a month\n", dollars(month.total()))), "{text}");
        let per_conversation = month.total() / 1_500.0;
        let per_thousand = dollars(per_conversation * 1000.0);
        let expected =
            format!("per conversation: ${per_conversation:.5}, ${per_thousand} per thousand (1,500 conversations");
        assert!(text.contains(&expected), "{text}");
        let with_urls = profile::monthly(&Profile { endpoint: Endpoint::FunctionUrl, ..profile }).total();
        assert!(text.contains(&format!("with function URLs: ${} a month\n", dollars(with_urls))), "{text}");
        assert!(with_urls < month.total());
    }

    #[test]
    fn the_report_of_a_quiet_account_is_its_fixed_costs() {
        let quiet = Profile { conversations_per_day: 0.0, widget_hours_per_day: 0.0, ..Profile::default() };
        let text = report(&quiet);
        assert!(text.contains("per conversation: none (no conversations)"), "{text}");
        let fixed = dollars(profile::monthly(&quiet).fixed.total());
        assert!(text.contains(&format!("total: ${fixed} a month")), "{text}");
    }

    #[test]
    fn numbers_are_grouped_and_rounded() {
        assert_eq!(dollars(1234567.891), "1,234,567.89");
        assert_eq!(dollars(0.004), "0.00");
        assert_eq!(whole(999.6), "1,000");
        assert_eq!(whole(12.0), "12");
        assert_eq!(trimmed(0.1), "0.1");
        assert_eq!(trimmed(20.0), "20");
        let profile = Profile { manager_typing_share: 0.07, ..Profile::default() };
        assert!(report(&profile).contains("managers typing 7% of it"));
    }
}
