//! The floor of the app's HTTP stack for `app-bench`'s `axum_ping` row: the same axum, hyper
//! and tokio versions and runtime as `app serve`, one `GET /ping` route with the app's body,
//! and nothing else (no middleware, no request log, no metrics). The gap between this row
//! and our `ping` row is what the app's own layers cost per request.

use std::net::SocketAddr;

use axum::Router;
use axum::http::header;
use axum::routing::get;
use clap::Parser;

#[derive(Parser)]
#[command(about = "A bare axum GET /ping server: the floor app-bench measures our stack against")]
struct Args {
    /// Address to listen on.
    #[arg(long)]
    listen: SocketAddr,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The runtime `app serve` builds: multi-threaded, one worker per core.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let app = Router::new().route(
            "/ping",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    r#"{"message":"pong"}"#,
                )
            }),
        );
        let listener = tokio::net::TcpListener::bind(args.listen).await?;
        axum::serve(listener, app).await?;
        Ok(())
    })
}
