//! The cold-start benchmark's baseline (`bench/cold-start`): the hello world of `lambda_http`,
//! on the same pinned `lambda_http` and `tokio` as the bridge's functions, with the same
//! default tracing subscriber they install, answering every request 200 "hello".

use lambda_http::{Body, Error, Request, Response, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    lambda_http::run(service_fn(hello)).await
}

async fn hello(_request: Request) -> Result<Response<Body>, Error> {
    Ok(Response::builder().status(200).header("content-type", "text/plain").body(Body::from("hello"))?)
}
