//! Running a [`Bridge`] entry point under AWS Lambda behind an HTTP API (payload v2).

use std::convert::Infallible;
use std::sync::Arc;

use lambda_http::{Body, Request, Response, service_fn};

use crate::app::Bridge;
use crate::http::HttpRequest;
use crate::routes::EntryPoint;

/// Serves Lambda invocations until the runtime stops the process.
pub async fn serve(bridge: Arc<Bridge>, entry: EntryPoint) -> Result<(), lambda_http::Error> {
    lambda_http::run(service_fn(move |request: Request| {
        let bridge = bridge.clone();
        async move { Ok::<_, Infallible>(into_lambda(bridge.handle(entry, from_lambda(request)).await)) }
    }))
    .await
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

fn into_lambda(response: crate::http::HttpResponse) -> Response<Body> {
    response.map(|bytes| match String::from_utf8(bytes.to_vec()) {
        Ok(text) => Body::Text(text),
        Err(binary) => Body::Binary(binary.into_bytes()),
    })
}
