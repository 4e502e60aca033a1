//! Running a [`Bridge`] entry point under AWS Lambda behind an HTTP API (payload v2).

use std::sync::Arc;

use lambda_http::lambda_runtime::Diagnostic;
use lambda_http::{Body, Request, Response, service_fn};

use super::deploy::{ColdStart, FunctionError};
use super::http::HttpRequest;
use super::routes::EntryPoint;

/// Serves Lambda invocations until the runtime stops the process. An invocation that finds the
/// bridge unbuildable (its secrets unreadable) fails as a function error: the errors alarm
/// counts it, API Gateway answers 500, and Kommo or the chat service retries later.
pub async fn serve(cold_start: Arc<ColdStart>, entry: EntryPoint) -> Result<(), lambda_http::Error> {
    lambda_http::run(service_fn(move |request: Request| {
        let cold_start = cold_start.clone();
        async move {
            let bridge = cold_start.bridge().await.map_err(diagnostic)?;
            Ok::<_, Diagnostic>(into_lambda(bridge.handle(entry, from_lambda(request)).await))
        }
    }))
    .await
}

/// A function error as Lambda reports it: `errorType` is its kind, not a Rust type's name.
pub fn diagnostic(error: FunctionError) -> Diagnostic {
    Diagnostic { error_type: error.kind.to_owned(), error_message: error.to_string() }
}

fn from_lambda(request: Request) -> HttpRequest {
    let (parts, body) = request.into_parts();
    let bytes = match body {
        Body::Empty => bytes::Bytes::new(),
        Body::Text(text) => bytes::Bytes::from(text),
        Body::Binary(data) => bytes::Bytes::from(data),
        _ => bytes::Bytes::new(),
    };
    HttpRequest::from_parts(parts, bytes)
}

fn into_lambda(response: super::http::HttpResponse) -> Response<Body> {
    response.map(|bytes| match String::from_utf8(bytes.to_vec()) {
        Ok(text) => Body::Text(text),
        Err(binary) => Body::Binary(binary.into_bytes()),
    })
}
