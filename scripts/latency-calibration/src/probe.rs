//! A closed-loop HTTP/1.1 load generator that keeps every request: C
//! keep-alive connections on one thread (mio), each sending `GET PATH` as
//! soon as its previous answer is complete, for S seconds. Prints req/s
//! and percentiles like wrk, then *when* the slow requests happened: how
//! many 10 ms intervals hold requests at or above the p99, and how those
//! are spread over the connections. Slow requests bunched in a few
//! intervals and spread evenly over the connections mean phases in which
//! the whole exchange slows down, not a connection starved by unfair
//! ordering. `--log FILE` writes every request as `start_ns latency_ns conn`.
//!
//! `probe ADDR PATH CONNECTIONS SECONDS [--log FILE]`

use mio::{Events, Interest, Poll, Token, net::TcpStream};
use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

fn fail(msg: String) -> ! {
    eprintln!("probe: {msg}");
    std::process::exit(2)
}

/// The length of the first complete response in `buf`, if there is one
/// (headers, then a Content-Length body).
fn complete_response(buf: &[u8]) -> Option<usize> {
    let h = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..h]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| fail("a response without Content-Length".into()));
    (buf.len() >= h + 4 + len).then_some(h + 4 + len)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        fail("usage: probe ADDR PATH CONNECTIONS SECONDS [--log FILE]".into());
    }
    let addr = args[1]
        .parse()
        .unwrap_or_else(|e| fail(format!("address: {e}")));
    let conns_n: usize = args[3]
        .parse()
        .unwrap_or_else(|e| fail(format!("connections: {e}")));
    let secs: f64 = args[4]
        .parse()
        .unwrap_or_else(|e| fail(format!("seconds: {e}")));
    let log_path = args
        .iter()
        .position(|a| a == "--log")
        .and_then(|i| args.get(i + 1));
    let req = format!("GET {} HTTP/1.1\r\nHost: probe\r\n\r\n", args[2]).into_bytes();

    let mut poll = Poll::new().unwrap_or_else(|e| fail(format!("poll: {e}")));
    let mut conns = Vec::with_capacity(conns_n);
    for i in 0..conns_n {
        let mut s = TcpStream::connect(addr).unwrap_or_else(|e| fail(format!("connect: {e}")));
        poll.registry()
            .register(&mut s, Token(i), Interest::READABLE)
            .unwrap_or_else(|e| fail(format!("register: {e}")));
        conns.push(s);
    }
    std::thread::sleep(Duration::from_millis(100));
    for s in &conns {
        s.set_nodelay(true)
            .unwrap_or_else(|e| fail(format!("connect: {e}")));
    }
    let t0 = Instant::now();
    let now = || t0.elapsed().as_nanos() as u64;
    let end = (secs * 1e9) as u64;
    let mut start = vec![0u64; conns_n];
    let mut pending: Vec<Vec<u8>> = vec![Vec::new(); conns_n];
    let mut buf = vec![0u8; 1 << 16];
    // (start, latency, connection) of every answered request.
    let mut log: Vec<(u64, u64, u32)> = Vec::with_capacity(4_000_000);
    for (i, s) in conns.iter_mut().enumerate() {
        start[i] = now();
        s.write_all(&req)
            .unwrap_or_else(|e| fail(format!("send: {e}")));
    }
    let mut events = Events::with_capacity(1024);
    'run: loop {
        poll.poll(&mut events, None)
            .unwrap_or_else(|e| fail(format!("poll: {e}")));
        for ev in events.iter() {
            let i = ev.token().0;
            loop {
                match conns[i].read(&mut buf) {
                    Ok(0) => fail(format!("connection {i} closed by the server")),
                    Ok(n) => pending[i].extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => fail(format!("receive: {e}")),
                }
            }
            while let Some(n) = complete_response(&pending[i]) {
                pending[i].drain(..n);
                let t = now();
                log.push((start[i], t - start[i], i as u32));
                if t > end {
                    break 'run;
                }
                start[i] = t;
                conns[i]
                    .write_all(&req)
                    .unwrap_or_else(|e| fail(format!("send: {e}")));
            }
        }
    }

    if let Some(p) = log_path {
        let f = std::fs::File::create(p).unwrap_or_else(|e| fail(format!("{p}: {e}")));
        let mut f = std::io::BufWriter::new(f);
        for (s, l, c) in &log {
            writeln!(f, "{s} {l} {c}").unwrap_or_else(|e| fail(format!("{p}: {e}")));
        }
    }
    let n = log.len();
    if n == 0 {
        fail("no request was answered".into());
    }
    let mut lat: Vec<u64> = log.iter().map(|r| r.1).collect();
    lat.sort_unstable();
    let q = |x: f64| lat[((n as f64 * x) as usize).min(n - 1)] as f64 / 1e6;
    println!(
        "{:.0} req/s, p50 {:.3} p90 {:.3} p99 {:.3} p999 {:.3} ms",
        n as f64 / secs,
        q(0.5),
        q(0.9),
        q(0.99),
        q(0.999)
    );
    let p99 = lat[((n as f64 * 0.99) as usize).min(n - 1)];
    let mut per_interval = std::collections::BTreeMap::<u64, u32>::new();
    let mut per_conn = vec![0u32; conns_n];
    for &(s, l, c) in &log {
        if l >= p99 {
            *per_interval.entry(s / 10_000_000).or_default() += 1;
            per_conn[c as usize] += 1;
        }
    }
    per_conn.sort_unstable();
    println!(
        "requests at or above the p99: in {} of {} 10 ms intervals; per connection min {} median {} max {}",
        per_interval.len(),
        end / 10_000_000,
        per_conn[0],
        per_conn[conns_n / 2],
        per_conn[conns_n - 1]
    );
}
