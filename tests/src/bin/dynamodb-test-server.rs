//! The DynamoDB-compatible server the test script starts: Dynoxide (the Rust crate `dynoxide-rs`),
//! serving the DynamoDB JSON protocol on a loopback port.
//!
//! `dynamodb-test-server [--port N] [--db FILE]`: port 0 (the default) lets the system choose;
//! with `--db` the data lives in a file and survives a restart (for fault tests). Prints
//! `READY <port>` once it accepts connections.

use std::io::Write;

#[tokio::main]
async fn main() {
    let mut port: u16 = 0;
    let mut db_path: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--port", Some(value)) => port = value.parse().unwrap_or_else(|_| usage(&format!("bad port {value:?}"))),
            ("--db", Some(value)) => db_path = Some(value),
            _ => usage(&format!("unexpected argument {arg:?}")),
        }
    }
    let database = match &db_path {
        Some(path) => dynoxide::Database::new(path),
        None => dynoxide::Database::memory(),
    }
    .unwrap_or_else(|e| usage(&format!("cannot open the database: {e}")));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| usage(&format!("cannot listen on 127.0.0.1:{port}: {e}")));
    let bound = listener.local_addr().expect("a bound listener has an address").port();
    println!("READY {bound}");
    std::io::stdout().flush().expect("stdout is writable");
    dynoxide::server::serve_on(listener, database).await;
}

fn usage(problem: &str) -> ! {
    eprintln!("dynamodb-test-server: {problem}\nusage: dynamodb-test-server [--port N] [--db FILE]");
    std::process::exit(2);
}
