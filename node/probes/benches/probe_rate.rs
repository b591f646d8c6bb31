//! TCP connect probes per second per core, through the real executor (`run_test`).
//!
//! Listeners on 32 loopback addresses (127.0.0.2–127.0.0.33) spread the 4-tuples so ephemeral
//! ports and TIME_WAIT never become the limit; accepted sockets are closed with SO_LINGER 0. The
//! probes run on a current-thread runtime on the main thread, so that thread's CPU time is the
//! "core" the figure is per; the listeners run on their own thread and are reported apart.
//!
//! Target: at least 10,000 connects/s per core. Run: `cargo bench -p foureyes-probes --bench
//! probe_rate` (optionally `-- SECONDS CONCURRENCY`).
// Local targets for the probes: listening here is the test's job, not the agent's.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::print_stdout)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use foureyes_probes::run_test;
use foureyes_proto::v1::{ProbeConfig, Status, TcpConfig, Test, probe_config::Kind};

const ADDRESSES: u8 = 32;
const TARGET_PER_CORE: f64 = 10_000.0;

/// (utime + stime) in seconds from a /proc stat file; USER_HZ is 100 on Linux.
fn cpu_seconds(path: &str) -> f64 {
    let Ok(text) = std::fs::read_to_string(path) else {
        return f64::NAN;
    };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let Some(rest) = text.rsplit_once(')').map(|(_, r)| r) else {
        return f64::NAN;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    // `rest` starts at field 3 (state), so field N is at index N - 3.
    (ticks(14 - 3) + ticks(15 - 3)) / 100.0
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with("--"));
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let concurrency: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);

    // Listeners on their own thread and runtime.
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Vec<SocketAddr>>();
    let server_stop = stop.clone();
    let server = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("server runtime");
        rt.block_on(async move {
            let mut addrs = Vec::new();
            for i in 0..ADDRESSES {
                let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i));
                let listener = tokio::net::TcpListener::bind((ip, 0))
                    .await
                    .expect("bind listener");
                addrs.push(listener.local_addr().expect("addr"));
                let stop = server_stop.clone();
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok((s, _)) = listener.accept().await {
                            let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                        }
                    }
                });
            }
            ready_tx.send(addrs).expect("ready");
            while !server_stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
    });
    let addrs = ready_rx.recv().expect("listeners");
    let server_tid = std::fs::read_dir("/proc/self/task")
        .ok()
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .find(|t| *t != std::process::id().to_string());

    let tests: Rc<Vec<Test>> = Rc::new(
        addrs
            .iter()
            .map(|a| Test {
                id: format!("bench-{a}"),
                timeout_ms: 2000,
                config: Some(ProbeConfig {
                    kind: Some(Kind::Tcp(TcpConfig {
                        host: a.ip().to_string(),
                        port: u32::from(a.port()),
                        family: 0,
                    })),
                }),
                ..Default::default()
            })
            .collect(),
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    let main_stat = format!("/proc/self/task/{}/stat", std::process::id());
    let run_for = Duration::from_secs(seconds);

    // Warm-up, then the measured window.
    let mut report = (0u64, 0u64, Duration::ZERO, 0.0, 0.0, 0.0);
    for (phase, window) in [
        ("warm-up", Duration::from_millis(500)),
        ("measure", run_for),
    ] {
        let cpu0 = cpu_seconds(&main_stat);
        let srv0 = server_tid.as_ref().map_or(f64::NAN, |t| {
            cpu_seconds(&format!("/proc/self/task/{t}/stat"))
        });
        let proc0 = cpu_seconds("/proc/self/stat");
        let start = Instant::now();
        let (ok, failed) = rt.block_on(async {
            let local = tokio::task::LocalSet::new();
            let mut handles = Vec::new();
            for worker in 0..concurrency {
                let tests = tests.clone();
                handles.push(local.spawn_local(async move {
                    let (mut ok, mut failed) = (0u64, 0u64);
                    let mut i = worker;
                    while start.elapsed() < window {
                        let r = run_test(&tests[i % tests.len()]).await;
                        if r.status() == Status::Ok {
                            ok += 1;
                        } else {
                            failed += 1;
                            if worker == 0 && failed <= 3 {
                                eprintln!("probe failed: {}", r.error);
                            }
                        }
                        i += 1;
                    }
                    (ok, failed)
                }));
            }
            local
                .run_until(async {
                    let mut total = (0, 0);
                    for h in handles {
                        let (o, f) = h.await.unwrap_or((0, 0));
                        total.0 += o;
                        total.1 += f;
                    }
                    total
                })
                .await
        });
        let wall = start.elapsed();
        let cpu = cpu_seconds(&main_stat) - cpu0;
        let srv = server_tid.as_ref().map_or(f64::NAN, |t| {
            cpu_seconds(&format!("/proc/self/task/{t}/stat"))
        }) - srv0;
        let proc_cpu = cpu_seconds("/proc/self/stat") - proc0;
        if phase == "measure" {
            report = (ok, failed, wall, cpu, srv, proc_cpu);
        }
    }
    stop.store(true, Ordering::Relaxed);
    // Wake the accept loops so they see `stop`.
    for a in &addrs {
        let _ = std::net::TcpStream::connect_timeout(a, Duration::from_millis(100));
    }
    let _ = server.join();

    let (ok, failed, wall, cpu, srv, proc_cpu) = report;
    let rate = ok as f64 / wall.as_secs_f64();
    let per_core = ok as f64 / cpu;
    println!("probe_rate: TCP connect executor over {ADDRESSES} loopback listeners");
    println!(
        "  window {:.2} s, concurrency {concurrency}, {ok} connects OK, {failed} failed",
        wall.as_secs_f64()
    );
    println!("  connects/s (wall):                {rate:>10.0}");
    println!(
        "  connects/s/core (probe thread):   {per_core:>10.0}   (probe thread CPU {cpu:.2} s)"
    );
    println!(
        "  connects/s/core (whole process):  {:>10.0}   (process CPU {proc_cpu:.2} s, listener thread {srv:.2} s)",
        ok as f64 / proc_cpu
    );
    println!(
        "  target: >= {TARGET_PER_CORE:.0} connects/s/core: {}",
        if per_core >= TARGET_PER_CORE {
            "MET"
        } else {
            "NOT MET"
        }
    );
}
