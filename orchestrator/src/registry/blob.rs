//! Blobs: is it there (HEAD), mount it from another repository of the same
//! registry, or stream it from the source registry into an upload, in one
//! PUT or in PATCH chunks, hashing as it goes. A blob is never held in
//! memory: bytes flow from the source response into the upload request,
//! and the digest is decided at the last byte, before that byte is sent,
//! so a blob that does not match its digest is never committed.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{Method, StatusCode, Url};

use super::auth::Scope;
use super::client::{Body, Registry};
use super::digest::{Digest, Mismatch, Verifier};
use super::error::{from_reqwest, Error, ErrorKind};
use super::manifest::{header, Descriptor};
use super::reference::check_repository;

/// How a blob came to be in the destination repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// It was there already.
    Existing,
    /// Mounted from another repository of the same registry: no bytes moved.
    Mounted,
    /// Streamed from the source.
    Uploaded,
}

/// Puts a blob that `dst_repo` lacks there from `src_repo` on `src`: a
/// mount if a repository of the destination registry is known to have
/// it, else a verified stream. Transient failures restart the blob from
/// the source, with backoff. `streamed` counts bytes as they pass (and
/// forgets a failed try's).
pub(crate) async fn transfer_blob(
    src: &Registry,
    src_repo: &str,
    dst: &Registry,
    dst_repo: &str,
    blob: &Descriptor,
    streamed: &Arc<AtomicU64>,
) -> Result<Placement, Error> {
    let digest = &blob.digest;
    let mount_from = if src.same_registry(dst) {
        Some(src_repo.to_string())
    } else {
        dst.blob_home(digest, dst_repo)
    };
    let mut failed = 0;
    loop {
        let attempt = async {
            let opened;
            let session = if mount_from.is_some() {
                match dst
                    .start_upload(dst_repo, digest, mount_from.as_deref())
                    .await?
                {
                    Started::Mounted => return Ok(Placement::Mounted),
                    Started::Session(url) => {
                        opened = src.open_blob(src_repo, blob, streamed.clone()).await;
                        url
                    }
                }
            } else {
                // Nothing to mount from: open the source while the upload
                // starts, saving a round trip per blob.
                let (started, source) = tokio::join!(
                    dst.start_upload(dst_repo, digest, None),
                    src.open_blob(src_repo, blob, streamed.clone())
                );
                opened = source;
                match started? {
                    Started::Session(url) => url,
                    Started::Mounted => return Ok(Placement::Mounted),
                }
            };
            let source = match opened {
                Ok(s) => s,
                Err(e) => {
                    dst.cancel_upload(dst_repo, session).await;
                    return Err(e);
                }
            };
            let result = dst.upload(dst_repo, session.clone(), blob, &source).await;
            if result.is_err() {
                streamed.fetch_sub(source.seen(), Ordering::Relaxed);
                dst.cancel_upload(dst_repo, session).await;
            }
            result.map(|()| Placement::Uploaded)
        };
        match attempt.await {
            Ok(p) => {
                dst.remember_blob(digest, dst_repo);
                return Ok(p);
            }
            Err(e) if e.is_transient() => {
                failed += 1;
                match dst.tuning().retry.delay(failed, None) {
                    Some(d) => tokio::time::sleep(d).await,
                    None => {
                        return Err(Error {
                            kind: e.kind.after(failed),
                            ..e
                        })
                    }
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// The answer to "start an upload".
pub(crate) enum Started {
    /// The mount worked: the blob is in the repository.
    Mounted,
    /// An upload session to send the blob to.
    Session(Url),
}

impl Registry {
    /// Whether `repository` holds the blob (a HEAD).
    pub async fn blob_exists(&self, repository: &str, digest: &Digest) -> Result<bool, Error> {
        check_repository(repository).map_err(|m| self.error(None, None, ErrorKind::Config(m)))?;
        let object = format!("blob {digest}");
        let req = self.request(
            Method::HEAD,
            &format!("/v2/{repository}/blobs/{digest}"),
            Scope::pull(repository),
            Some(repository),
            Some(object.clone()),
        );
        let resp = self.send(req).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(false);
        }
        self.expect(resp, &[StatusCode::OK], Some(repository), Some(object))
            .await?;
        Ok(true)
    }

    /// Uploads content held in memory (an image config, generated test or
    /// benchmark data) as a blob of `repository`, unless it is there
    /// already. Returns its descriptor's digest.
    pub async fn push_blob(&self, repository: &str, data: Bytes) -> Result<Digest, Error> {
        let digest = Digest::of(&data);
        if self.blob_exists(repository, &digest).await? {
            return Ok(digest);
        }
        let blob = Descriptor {
            media_type: String::new(),
            digest: digest.clone(),
            size: data.len() as u64,
            urls: Vec::new(),
            platform: None,
        };
        let session = match self.start_upload(repository, &digest, None).await? {
            Started::Session(url) => url,
            Started::Mounted => return Ok(digest),
        };
        let origin = (self.name().to_string(), repository.to_string());
        let stream = futures_util::stream::once(async move { Ok(data) });
        let source = Source::new(Box::pin(stream), &blob, Arc::default(), origin);
        self.upload(repository, session, &blob, &source).await?;
        self.remember_blob(&digest, repository);
        Ok(digest)
    }

    /// `POST /v2/<repo>/blobs/uploads/`, with `?mount=<digest>&from=<repo>`
    /// when another repository of this registry may have the blob (201:
    /// mounted; 202: not mountable, here is a session instead).
    pub(crate) async fn start_upload(
        &self,
        repository: &str,
        digest: &Digest,
        mount_from: Option<&str>,
    ) -> Result<Started, Error> {
        let object = format!("blob {digest}");
        let mut req = self.request(
            Method::POST,
            &format!("/v2/{repository}/blobs/uploads/"),
            Scope::push(repository),
            Some(repository),
            Some(object.clone()),
        );
        if let Some(from) = mount_from {
            req.scope = req.scope.and_pull(from);
            req.url
                .query_pairs_mut()
                .append_pair("mount", &digest.to_string())
                .append_pair("from", from);
        }
        req.headers
            .insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        let resp = self.send(req).await?;
        if mount_from.is_some() && resp.status() == StatusCode::CREATED {
            return Ok(Started::Mounted);
        }
        let resp = self
            .expect(
                resp,
                &[StatusCode::ACCEPTED],
                Some(repository),
                Some(object.clone()),
            )
            .await?;
        Ok(Started::Session(self.location(&resp, repository, &object)?))
    }

    /// Opens the blob for reading, as a verified stream.
    async fn open_blob(
        &self,
        repository: &str,
        blob: &Descriptor,
        streamed: Arc<AtomicU64>,
    ) -> Result<Source, Error> {
        let object = format!("blob {}", blob.digest);
        let req = self.request(
            Method::GET,
            &format!("/v2/{repository}/blobs/{}", blob.digest),
            Scope::pull(repository),
            Some(repository),
            Some(object.clone()),
        );
        let resp = self.send(req).await?;
        let resp = self
            .expect(
                resp,
                &[StatusCode::OK],
                Some(repository),
                Some(object.clone()),
            )
            .await?;
        if let Some(len) = resp.content_length().filter(|&l| l != blob.size) {
            return Err(self.error(
                Some(repository),
                Some(object),
                ErrorKind::Content(Mismatch::Size {
                    expected: blob.size,
                    actual: len,
                }),
            ));
        }
        let stream = resp.bytes_stream().map(|r| r.map_err(|e| from_reqwest(&e)));
        let origin = (self.name().to_string(), repository.to_string());
        Ok(Source::new(Box::pin(stream), blob, streamed, origin))
    }

    /// Sends the blob into an upload session: one PUT for blobs up to the
    /// chunk size, else PATCH chunks (each to the Location the previous one
    /// returned) and a closing PUT with the digest, sent only once every
    /// byte arrived and matched.
    async fn upload(
        &self,
        repository: &str,
        mut session: Url,
        blob: &Descriptor,
        source: &Source,
    ) -> Result<(), Error> {
        let object = format!("blob {}", blob.digest);
        let at = |e: Error| source.blame(e);
        let size = blob.size;
        let chunk = self.tuning().chunk_size;
        let data_request = |url: Url, len: u64| {
            let mut req = self.request(
                Method::PATCH,
                "/",
                Scope::push(repository),
                Some(repository),
                Some(object.clone()),
            );
            req.url = url;
            req.headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            req.headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
            req.body = Body::Stream(source.body(len));
            req
        };
        let mut commit = if size > chunk {
            let mut offset = 0;
            while offset < size {
                let n = chunk.min(size - offset);
                let mut req = data_request(session.clone(), n);
                let range = format!("{}-{}", offset, offset + n - 1);
                if let Ok(v) = HeaderValue::from_str(&range) {
                    req.headers.insert("content-range", v);
                }
                let resp = self.send(req).await.map_err(at)?;
                let resp = self
                    .expect(
                        resp,
                        &[StatusCode::ACCEPTED, StatusCode::NO_CONTENT],
                        Some(repository),
                        Some(object.clone()),
                    )
                    .await
                    .map_err(at)?;
                session = self.location(&resp, repository, &object)?;
                offset += n;
            }
            source.finish()?;
            let mut req = data_request(session, 0);
            req.method = Method::PUT;
            req.body = Body::Empty;
            req.headers.remove(CONTENT_TYPE);
            req
        } else {
            if size == 0 {
                source.finish()?;
            }
            let mut req = data_request(session, size);
            req.method = Method::PUT;
            req
        };
        commit
            .url
            .query_pairs_mut()
            .append_pair("digest", &blob.digest.to_string());
        let resp = self.send(commit).await.map_err(at)?;
        let resp = self
            .expect(
                resp,
                &[StatusCode::CREATED],
                Some(repository),
                Some(object.clone()),
            )
            .await
            .map_err(at)?;
        source.finish()?;
        match header(&resp, "docker-content-digest") {
            Some(d) if d != blob.digest.to_string() => Err(self.error(
                Some(repository),
                Some(object),
                ErrorKind::Protocol(format!("the registry stored the blob as {d}")),
            )),
            _ => Ok(()),
        }
    }

    /// Abandons an upload session (best effort: registries also purge
    /// stale sessions themselves).
    async fn cancel_upload(&self, repository: &str, session: Url) {
        let mut req = self.request(
            Method::DELETE,
            "/",
            Scope::push(repository),
            Some(repository),
            None,
        );
        req.url = session;
        let _ = self.send(req).await;
    }
}

/// The blob being read, shared by the upload requests that carry its
/// consecutive chunks.
#[derive(Clone)]
pub(crate) struct Source(Arc<Mutex<SourceState>>);

type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, ErrorKind>> + Send>>;

struct SourceState {
    stream: ByteStream,
    /// Bytes read past the end of the current chunk.
    leftover: Option<Bytes>,
    verifier: Verifier,
    /// Why reading stopped early: blamed instead of the upload's error.
    failure: Option<ErrorKind>,
    streamed: Arc<AtomicU64>,
    /// The source's registry and repository, for errors.
    origin: (String, String),
    object: String,
}

impl Source {
    fn new(
        stream: ByteStream,
        blob: &Descriptor,
        streamed: Arc<AtomicU64>,
        origin: (String, String),
    ) -> Source {
        Source(Arc::new(Mutex::new(SourceState {
            stream,
            leftover: None,
            verifier: Verifier::new(blob.digest.clone(), blob.size),
            failure: None,
            streamed,
            origin,
            object: format!("blob {}", blob.digest),
        })))
    }

    fn state(&self) -> MutexGuard<'_, SourceState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A request body of the next `len` bytes.
    fn body(&self, len: u64) -> reqwest::Body {
        reqwest::Body::wrap_stream(Take {
            source: self.clone(),
            remaining: len,
        })
    }

    fn seen(&self) -> u64 {
        self.state().verifier.seen()
    }

    fn source_error(st: &SourceState, kind: ErrorKind) -> Error {
        Error {
            registry: st.origin.0.clone(),
            repository: Some(st.origin.1.clone()),
            object: Some(st.object.clone()),
            kind,
        }
    }

    /// The error to report for a failed upload request: the source's, if
    /// reading it is what failed.
    fn blame(&self, upload_error: Error) -> Error {
        let mut st = self.state();
        match st.failure.take() {
            Some(kind) => Source::source_error(&st, kind),
            None => upload_error,
        }
    }

    /// Every byte arrived and matched: the blob may be committed.
    fn finish(&self) -> Result<(), Error> {
        let mut st = self.state();
        if let Some(kind) = st.failure.take() {
            return Err(Source::source_error(&st, kind));
        }
        st.verifier
            .finish()
            .map_err(|m| Source::source_error(&st, ErrorKind::Content(m)))
    }
}

/// A stream of the next `remaining` bytes of a [`Source`].
struct Take {
    source: Source,
    remaining: u64,
}

impl Stream for Take {
    type Item = Result<Bytes, io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let source = self.source.clone();
        let mut st = source.state();
        let fail = |st: &mut SourceState, kind: ErrorKind| {
            let msg = kind.to_string();
            st.failure = Some(kind);
            Poll::Ready(Some(Err(io::Error::other(msg))))
        };
        let mut piece = loop {
            let next = match st.leftover.take() {
                Some(b) => b,
                None => match st.stream.as_mut().poll_next(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Some(Ok(b))) => b,
                    Poll::Ready(Some(Err(kind))) => return fail(&mut st, kind),
                    Poll::Ready(None) => {
                        let kind = match st.verifier.finish() {
                            Err(m) => ErrorKind::Content(m),
                            Ok(()) => ErrorKind::Protocol("the blob ended early".into()),
                        };
                        return fail(&mut st, kind);
                    }
                },
            };
            if !next.is_empty() {
                break next;
            }
        };
        if piece.len() as u64 > self.remaining {
            st.leftover = Some(piece.split_off(self.remaining as usize));
        }
        if let Err(m) = st.verifier.update(&piece) {
            return fail(&mut st, ErrorKind::Content(m));
        }
        st.streamed.fetch_add(piece.len() as u64, Ordering::Relaxed);
        drop(st);
        self.remaining -= piece.len() as u64;
        Poll::Ready(Some(Ok(piece)))
    }
}
