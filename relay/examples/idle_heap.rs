//! Heap bytes per idle TLS connection, counted exactly: the relay runs in this process on
//! one worker under a counting allocator (mimalloc underneath, as in `mllp-relay`), a child
//! process holds N TLS connections open after their handshakes, and the live heap is read
//! once the connections have been idle long enough to give their buffers back.
//!
//! RSS, which `scripts/idle-rss.py` and `mllp-bench` report, is what the operator pays, but on
//! this VM it moves by a few KiB per connection from run to run with the allocator's page
//! reuse; this count does not, so it is the figure to watch when changing what a connection
//! keeps.
//!
//! ```text
//! cargo run --release -p relay --example idle_heap [-- CONNECTIONS] [--plain]
//! ```
//! Everything runs on 127.0.0.1; the downstream address is never connected to.

use std::alloc::{GlobalAlloc, Layout};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use netio::runtime::Driver;
use netio::tls::{ReloadableServerConfig, ServerTlsSettings, TlsRejections};
use relay::config::{Config, DownstreamConfig, ListenerConfig};
use rustls::pki_types::{CertificateDer, ServerName};

/// mimalloc, counting the bytes it really hands out (its size classes included) and the
/// number of live blocks.
struct Counting;

static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);
static LIVE_BLOCKS: AtomicI64 = AtomicI64::new(0);
/// Live blocks by usable size in 16-byte steps up to 64 KiB; the last slot counts the rest.
static BY_SIZE: [AtomicI64; SIZE_SLOTS] = [const { AtomicI64::new(0) }; SIZE_SLOTS];
const SIZE_SLOTS: usize = 4097;

fn size_slot(size: i64) -> usize {
    usize::try_from(size / 16).map_or(SIZE_SLOTS - 1, |slot| slot.min(SIZE_SLOTS - 1))
}

fn usable(ptr: *mut u8) -> i64 {
    // SAFETY: `ptr` is a live block from mimalloc.
    #[allow(unsafe_code)]
    let size = unsafe { libmimalloc_sys::mi_usable_size(ptr.cast()) };
    i64::try_from(size).unwrap_or(i64::MAX)
}

// SAFETY: forwards every call to mimalloc unchanged; the counters only observe.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is mimalloc's.
        let ptr = unsafe { mimalloc::MiMalloc.alloc(layout) };
        if !ptr.is_null() {
            let size = usable(ptr);
            LIVE_BYTES.fetch_add(size, Ordering::Relaxed);
            LIVE_BLOCKS.fetch_add(1, Ordering::Relaxed);
            BY_SIZE[size_slot(size)].fetch_add(1, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let size = usable(ptr);
        LIVE_BYTES.fetch_sub(size, Ordering::Relaxed);
        LIVE_BLOCKS.fetch_sub(1, Ordering::Relaxed);
        BY_SIZE[size_slot(size)].fetch_sub(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let before = usable(ptr);
        // SAFETY: as above.
        let moved = unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) };
        if !moved.is_null() {
            let after = usable(moved);
            LIVE_BYTES.fetch_add(after - before, Ordering::Relaxed);
            BY_SIZE[size_slot(before)].fetch_sub(1, Ordering::Relaxed);
            BY_SIZE[size_slot(after)].fetch_add(1, Ordering::Relaxed);
        }
        moved
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("hold") {
        hold(&args[2], args[3].parse().unwrap(), &args[4]);
        return;
    }
    let plain = args.iter().any(|a| a == "--plain");
    let connections: usize = args
        .iter()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .map_or(1000, |n| n.parse().expect("CONNECTIONS"));

    let dir = std::env::temp_dir().join(format!("idle-heap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();

    let rejections = Arc::new(TlsRejections::new());
    let settings = ServerTlsSettings {
        cert_chain: cert_path.clone(),
        key: key_path,
        client_ca: None,
        client_thumbprints: Vec::new(),
    };
    let mut listener = ListenerConfig::plain("127.0.0.1:0".parse().unwrap());
    if !plain {
        listener.tls = Some(ReloadableServerConfig::load(settings, rejections.clone()).unwrap());
        listener.tls_rejections = rejections;
    }
    // Never connected to: idle connections send nothing.
    let nowhere: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let config = Config {
        listeners: vec![listener],
        downstreams: vec![DownstreamConfig::plain("nowhere", nowhere)],
        routes: Vec::new(),
        default_downstream: Some(0),
        workers: 1,
        pin_workers: false,
        shutdown_grace: Duration::from_secs(1),
        driver: Driver::Auto,
        metrics_addr: None,
        readiness_window: relay::config::DEFAULT_READINESS_WINDOW,
        audit: relay::config::AuditConfig::Off,
        journal: None,
    };
    let relay = relay::start(config).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let (bytes_before, blocks_before) = live();
    let sizes_before = by_size();

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "hold",
            &relay.listen_addr().to_string(),
            &connections.to_string(),
            if plain {
                "-"
            } else {
                cert_path.to_str().unwrap()
            },
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut ready,
    )
    .unwrap();
    assert_eq!(
        ready.trim(),
        "ready",
        "the child could not open its connections"
    );
    // Idle connections give their buffers back after 1 s; the worker returns freed memory
    // once a second.
    std::thread::sleep(Duration::from_millis(3000));
    let (bytes_after, blocks_after) = live();
    let sizes_after = by_size();
    drop(child.stdin.take());
    child.wait().unwrap();
    relay.shutdown();
    std::fs::remove_dir_all(&dir).unwrap();

    let n = connections as f64;
    println!(
        "{connections} idle {} connections: {:.0} heap bytes ({:.2} KiB) and {:.1} blocks each",
        if plain { "plain" } else { "TLS" },
        (bytes_after - bytes_before) as f64 / n,
        (bytes_after - bytes_before) as f64 / n / 1024.0,
        (blocks_after - blocks_before) as f64 / n,
    );
    // What a connection holds, by block size: the slots that grew by at least one block per
    // ten connections.
    println!("blocks per connection by size:");
    for (slot, (after, before)) in sizes_after.iter().zip(&sizes_before).enumerate() {
        let per = (after - before) as f64 / n;
        if per >= 0.1 {
            let size = if slot == SIZE_SLOTS - 1 {
                "> 64 KiB".to_string()
            } else {
                format!("{} B", slot * 16)
            };
            println!("  {size:>9}: {per:5.2}");
        }
    }
}

fn by_size() -> Vec<i64> {
    BY_SIZE.iter().map(|n| n.load(Ordering::Relaxed)).collect()
}

fn live() -> (i64, i64) {
    (
        LIVE_BYTES.load(Ordering::Relaxed),
        LIVE_BLOCKS.load(Ordering::Relaxed),
    )
}

/// The child: opens `n` TLS connections to `addr` (plain ones when `ca` is `-`), completes
/// their handshakes, says "ready" and holds them until its stdin closes.
fn hold(addr: &str, n: usize, ca: &str) {
    if ca == "-" {
        let held: Vec<TcpStream> = (0..n).map(|_| TcpStream::connect(addr).unwrap()).collect();
        ready_then_wait();
        drop(held);
        return;
    }
    let pem = std::fs::read(ca).unwrap();
    let der = rustls_pki_types::pem::PemObject::from_pem_slice(&pem).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::into_owned(der)).unwrap();
    let config = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let mut tcp = TcpStream::connect(addr).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let mut tls = rustls::ClientConnection::new(config.clone(), name).unwrap();
        while tls.is_handshaking() {
            tls.complete_io(&mut tcp).unwrap();
        }
        held.push((tcp, tls));
    }
    ready_then_wait();
}

fn ready_then_wait() {
    println!("ready");
    std::io::stdout().flush().unwrap();
    let mut rest = String::new();
    let _ = std::io::stdin().read_line(&mut rest);
}
