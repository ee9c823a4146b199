//! Micro-benchmarks of the pieces that bound a transfer's speed: hashing,
//! compression, rsync signatures, diff, patch, and frame encoding and
//! decoding.
//! Run with `cargo bench -p mover --bench pieces`.

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mover::delta;
use mover::wire::frame::{self, Codec};
use mover::wire::message::{ToReceiver, ToSender};
use tokio_util::codec::Decoder;

fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn hashing(c: &mut Criterion) {
    let mut group = c.benchmark_group("hash");
    let buf = data(1024 * 1024, 1);
    group.throughput(Throughput::Bytes(buf.len() as u64));
    group.bench_function("blake3 whole 1 MiB", |b| b.iter(|| blake3::hash(&buf)));
    group.bench_function("segment hashes 1 MiB", |b| {
        b.iter(|| {
            buf.chunks(delta::MIN_SEGMENT as usize)
                .map(delta::segment_hash)
                .count()
        })
    });
    group.bench_function("segment-list file hash 1 MiB", |b| {
        b.iter(|| {
            let mut h = delta::FileHasher::new(Some(delta::MIN_SEGMENT));
            h.update(&buf);
            h.finalize()
        })
    });
    group.finish();
}

/// zstd at the level the sender uses, on text-like and on random data (the
/// cost of finding out that data does not shrink).
fn compression(c: &mut Criterion) {
    let text: Vec<u8> = (0..)
        .flat_map(|i: u32| format!("{i:08} GET /api/v1/items/{} 200\n", i % 1000).into_bytes())
        .take(1024 * 1024)
        .collect();
    let random = data(1024 * 1024, 3);
    let mut group = c.benchmark_group("compress");
    group.throughput(Throughput::Bytes(text.len() as u64));
    for (name, input) in [("text", &text), ("random", &random)] {
        group.bench_function(format!("zstd 1 MiB {name}"), |b| {
            let mut c = mover::compress::Compressor::new(mover::compress::Compress::On);
            b.iter(|| {
                c.next_file();
                c.compress(input)
            })
        });
    }
    group.finish();
}

fn signature_diff_apply(c: &mut Criterion) {
    let seg = delta::MIN_SEGMENT;
    let base = data(seg as usize, 2);
    let mut changed = base.clone();
    changed[4096..8192].fill(0x5a);
    let signature = delta::signature(&base, seg);
    let mut patch = Vec::new();
    delta::diff(signature.clone(), &changed, &mut patch).unwrap();

    let mut group = c.benchmark_group("delta");
    group.throughput(Throughput::Bytes(seg as u64));
    let kib = seg / 1024;
    group.bench_function(format!("signature {kib} KiB segment"), |b| {
        b.iter(|| delta::signature(&base, seg))
    });
    group.bench_function(format!("diff {kib} KiB segment, 4 KiB changed"), |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(patch.len());
            delta::diff(signature.clone(), &changed, &mut out).unwrap();
            out
        })
    });
    group.bench_function(format!("apply {kib} KiB segment"), |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(seg as usize);
            delta::apply(&base, &patch, &mut out, seg as usize).unwrap();
            out
        })
    });
    group.finish();
}

fn frames(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame");
    for size in [64 * 1024, frame::DATA_CHUNK] {
        let chunk = Bytes::from(data(size, 3));
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(
            BenchmarkId::new("data encode+decode", size),
            &chunk,
            |b, chunk| {
                let mut codec = Codec::<ToReceiver, ToSender>::default();
                let mut buf = BytesMut::with_capacity(size + 16);
                b.iter(|| {
                    let msg = ToReceiver::Literal {
                        data: chunk.clone(),
                    };
                    if let Some(data) = frame::encode(&msg, &mut buf).unwrap() {
                        buf.extend_from_slice(data);
                    }
                    codec.decode(&mut buf).unwrap().unwrap()
                })
            },
        );
    }
    let hashes = vec![[7u8; 16]; 4096];
    group.throughput(Throughput::Elements(1));
    group.bench_function("message encode+decode (4096 segment hashes)", |b| {
        let mut codec = Codec::<ToSender, ToReceiver>::default();
        let mut buf = BytesMut::new();
        b.iter(|| {
            let msg = ToSender::BaseHashes {
                id: 1,
                first: 0,
                hashes: hashes.clone(),
            };
            frame::encode(&msg, &mut buf).unwrap();
            codec.decode(&mut buf).unwrap().unwrap()
        })
    });
    group.finish();
}

/// The record ciphers TLS 1.3 can agree on, sealing full 16 KiB records as
/// the wire does: which one `tls::crypto_provider` prefers is chosen from
/// this (with AES-NI, AES-128-GCM does 10 rounds to AES-256's 14).
fn record_ciphers(c: &mut Criterion) {
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey};
    const RECORD: usize = 16 * 1024;
    let mut group = c.benchmark_group("tls record");
    group.throughput(Throughput::Bytes(RECORD as u64));
    for (name, algorithm) in [
        ("AES-128-GCM", &ring::aead::AES_128_GCM),
        ("AES-256-GCM", &ring::aead::AES_256_GCM),
        ("CHACHA20-POLY1305", &ring::aead::CHACHA20_POLY1305),
    ] {
        let key =
            LessSafeKey::new(UnboundKey::new(algorithm, &data(algorithm.key_len(), 9)).unwrap());
        let mut record = data(RECORD, 5);
        group.bench_function(format!("seal 16 KiB {name}"), |b| {
            b.iter(|| {
                let nonce = Nonce::assume_unique_for_key([0; 12]);
                key.seal_in_place_separate_tag(nonce, Aad::empty(), &mut record)
                    .unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    hashing,
    compression,
    signature_diff_apply,
    frames,
    record_ciphers
);
criterion_main!(benches);
