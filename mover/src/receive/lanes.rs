//! Data connections joining a session (`--streams`, [`crate::wire::stripes`]).
//!
//! A sender asking for N data connections names a fresh random token in its
//! `Streams` message, and its session registers that token here; each data
//! connection then opens with `Join` and the token instead of `Hello`. The
//! sender opens its data connections while the control connection says
//! Hello, so only their `Join` adds a round trip; a `Join` may therefore
//! come a moment before its session has registered, and waits for it
//! ([`REGISTRATION_WAIT`]).
//!
//! A join is accepted only if the token names a session still waiting, the
//! lane is one it has not got yet, and the joining connection's certificate
//! allows that session's volume: the same check as `Hello`, so a
//! certificate for another volume cannot slip bytes into this one even if
//! it learnt the token.
//!
//! A data connection stays open (its task waiting, holding its connection
//! slot) until the session that took it ends.

use crate::failure::Failure;
use crate::wire::io as wio;
use crate::wire::message::{ToReceiver, ToSender};
use crate::wire::stripes::{BoxRead, Merged, MAX_STREAMS};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWrite};
use tokio::sync::{mpsc, oneshot, Notify};

/// How long a `Join` whose token no session has registered waits for one
/// to: the sender's `Streams` went out on its control connection before
/// the `Join`, so this only covers the two connections' different paths.
const REGISTRATION_WAIT: Duration = Duration::from_secs(5);

/// The sessions waiting for their data connections, by token.
#[derive(Default)]
pub struct Lanes {
    waiting: Mutex<HashMap<[u8; 32], Waiting>>,
    /// Told whenever a session registers.
    registered: Notify,
}

struct Waiting {
    volume: String,
    joined: Vec<bool>,
    lanes: mpsc::Sender<Joined>,
}

/// A data connection handed to its session.
struct Joined {
    lane: u32,
    read: BoxRead,
    /// Dropped with the session: lets the connection's task end.
    release: oneshot::Sender<()>,
}

/// What a session keeps of its data connections besides their bytes: their
/// tasks end when this is dropped.
pub struct Held {
    _lanes: Vec<oneshot::Sender<()>>,
}

impl Lanes {
    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Waiting>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// For a session writing `volume` whose sender asked for `count` data
    /// connections joining with `token`: waits up to `deadline` for every
    /// lane to join, and returns their bytes merged in order.
    pub async fn gather(
        &self,
        (count, token): (u32, [u8; 32]),
        volume: &str,
        peer: &str,
        deadline: Duration,
    ) -> Result<(Merged, Held), Failure> {
        if !(2..=MAX_STREAMS).contains(&count) {
            return Err(Failure::protocol(
                peer,
                format!("asked for {count} data connections; 2 to {MAX_STREAMS} are allowed"),
            ));
        }
        let (tx, mut rx) = mpsc::channel(count as usize);
        {
            let mut waiting = self.waiting();
            if waiting.contains_key(&token) {
                return Err(Failure::protocol(
                    peer,
                    "named the token of another session for its data connections",
                ));
            }
            waiting.insert(
                token,
                Waiting {
                    volume: volume.to_string(),
                    joined: vec![false; count as usize],
                    lanes: tx,
                },
            );
        }
        let _registered = Registered(self, token);
        self.registered.notify_waiters();
        tracing::info!("{peer}: waiting for {count} data connections for volume {volume}");
        let mut joined: Vec<Joined> = Vec::with_capacity(count as usize);
        let gathering = async {
            while joined.len() < count as usize {
                match rx.recv().await {
                    Some(lane) => joined.push(lane),
                    None => break,
                }
            }
        };
        if tokio::time::timeout(deadline, gathering).await.is_err() {
            return Err(Failure::retryable(format!(
                "{peer}: only {} of {count} data connections joined within {}s",
                joined.len(),
                deadline.as_secs()
            )));
        }
        tracing::info!("{peer}: {count} data connections joined the session for volume {volume}");
        joined.sort_by_key(|j| j.lane);
        let (reads, held): (Vec<_>, Vec<_>) =
            joined.into_iter().map(|j| (j.read, j.release)).unzip();
        Ok((Merged::new(reads, peer), Held { _lanes: held }))
    }

    /// Serves a connection that opened with `Join`: hands it to its session
    /// and waits until that session is done with it. `allowed` lists the
    /// volumes its certificate names.
    pub async fn join<W: AsyncWrite + Unpin>(
        &self,
        (token, lane): ([u8; 32], u32),
        allowed: &[String],
        mut reader: wio::Reader<BoxRead, ToReceiver, ToSender>,
        mut write: W,
        peer: &str,
    ) -> Result<(), Failure> {
        let (held, done) = oneshot::channel();
        // A sender that gives up (its control connection was refused, say)
        // closes this connection: stop waiting for its session then, or
        // the connection slot held here would refuse its retry.
        let accepted = tokio::select! {
            accepted = self.accept_when_registered(token, lane, allowed) => accepted,
            early = reader.next() => Err(match early {
                Some(Ok(_)) => Failure::protocol(
                    peer,
                    format!("data connection {lane} sent more before it was welcomed"),
                ),
                _ => Failure::retryable(format!(
                    "{peer}: data connection {lane} closed before its session asked for it"
                )),
            }),
        };
        let answer = match &accepted {
            Ok(_) => crate::wire::hello::welcome(),
            Err(failure) => ToSender::Error {
                message: failure.message.clone(),
                retryable: failure.retryable,
            },
        };
        let sent = wio::write_one(&mut write, &answer).await;
        let lanes = accepted?;
        sent.map_err(|e| Failure::network(peer, e))?;
        // Whatever the reader holds beyond the Join is the lane's first bytes.
        let parts = reader.into_parts();
        let read: BoxRead = if parts.read_buf.is_empty() {
            parts.io
        } else {
            Box::new(std::io::Cursor::new(parts.read_buf.freeze()).chain(parts.io))
        };
        let joined = Joined {
            lane,
            read,
            release: held,
        };
        if lanes.try_send(joined).is_err() {
            return Err(Failure::retryable(format!(
                "{peer}: data connection {lane} joined a session that has ended"
            )));
        }
        // Until the session drops its end; the write half must stay open
        // meanwhile (closing it would half-close the connection).
        let _ = done.await;
        drop(write);
        Ok(())
    }

    /// [`Lanes::accept`], once the token's session has registered or
    /// [`REGISTRATION_WAIT`] has passed.
    async fn accept_when_registered(
        &self,
        token: [u8; 32],
        lane: u32,
        allowed: &[String],
    ) -> Result<mpsc::Sender<Joined>, Failure> {
        let until = tokio::time::Instant::now() + REGISTRATION_WAIT;
        loop {
            // Asked for before looking, so a registration in between is
            // not missed.
            let registered = self.registered.notified();
            tokio::pin!(registered);
            registered.as_mut().enable();
            if self.waiting().contains_key(&token) {
                return self.accept(token, lane, allowed);
            }
            if tokio::time::timeout_at(until, registered).await.is_err() {
                return self.accept(token, lane, allowed);
            }
        }
    }

    /// Checks a `Join` and marks its lane taken.
    fn accept(
        &self,
        token: [u8; 32],
        lane: u32,
        allowed: &[String],
    ) -> Result<mpsc::Sender<Joined>, Failure> {
        let mut waiting = self.waiting();
        let Some(session) = waiting.get_mut(&token) else {
            return Err(Failure::permanent(format!(
                "no session is waiting for a data connection with this token \
                 (it ended, timed out waiting, or never asked within {}s)",
                REGISTRATION_WAIT.as_secs()
            )));
        };
        if !allowed.contains(&session.volume) {
            return Err(Failure::permanent(format!(
                "the client certificate does not allow volume {:?}, which this data connection's session writes",
                session.volume
            )));
        }
        match session.joined.get_mut(lane as usize) {
            Some(taken) if !*taken => {
                *taken = true;
                Ok(session.lanes.clone())
            }
            Some(_) => Err(Failure::permanent(format!(
                "data connection {lane} has already joined this session"
            ))),
            None => Err(Failure::permanent(format!(
                "data connection {lane} is beyond the {} the session asked for",
                session.joined.len()
            ))),
        }
    }
}

/// Takes a session's token off the list when the session stops waiting.
struct Registered<'a>(&'a Lanes, [u8; 32]);

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.0.waiting().remove(&self.1);
    }
}
