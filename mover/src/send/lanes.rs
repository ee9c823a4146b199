//! A session's data connections (`--streams`, [`crate::wire::stripes`]),
//! sender side: once the receiver has said it takes them, each opens with
//! `Join` and the session's token, and from then on carries segments.

use super::SendConfig;
use crate::failure::Failure;
use crate::net::Duplex;
use crate::wire::hello::{self, Features};
use crate::wire::io as wio;
use crate::wire::message::{ToReceiver, ToSender};
use crate::wire::stripes::BoxWrite;
use tokio::io::AsyncWrite;

/// `failure` of data connection `lane`, saying so.
pub(super) fn on_lane(lane: u32, failure: Failure) -> Failure {
    Failure {
        message: format!("data connection {lane}: {}", failure.message),
        ..failure
    }
}

/// Tells the receiver on the control connection `write` which secret the
/// data connections `lanes` will present, has each join with it, and
/// returns their write halves in lane order.
pub(super) async fn join<W: AsyncWrite + Unpin>(
    write: &mut W,
    lanes: Vec<Box<dyn Duplex>>,
    config: &SendConfig,
) -> Result<Vec<BoxWrite>, Failure> {
    let token = crate::wire::stripes::random_token()?;
    let count = lanes.len() as u32;
    wio::write_one(write, &ToReceiver::Streams { count, token })
        .await
        .map_err(|e| Failure::network("receiver", e))?;
    let joining = lanes.into_iter().zip(0..).map(|(lane, index)| async move {
        let (read, mut write) = tokio::io::split(lane);
        let mut reader = wio::reader::<_, ToSender, ToReceiver>(read);
        let joined = async {
            let said = wio::write_one(&mut write, &ToReceiver::Join { token, lane: index }).await;
            hello::read_welcome(&mut reader, config.idle_timeout, &Features::ours()).await?;
            said.map_err(|e| Failure::network("receiver", e))
        };
        joined.await.map_err(|f| on_lane(index, f))?;
        Ok::<BoxWrite, Failure>(Box::new(write))
    });
    futures_util::future::try_join_all(joining).await
}
