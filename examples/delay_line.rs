//! A network path with a fixed round-trip delay, for the bench's delayed
//! scenarios (`bench/netns.py`, class `DelayedPath`). This kernel has no
//! `netem`, so the delay is added in user space, below TCP:
//!
//! ```text
//!  host netns                                   namespace
//!  clients ── TCP ── tun <host> ─┐         ┌─ tun <inner> ── TCP ── Postgres
//!                                │  this   │
//!                   read packet ─┴─▶ hold ─┴─▶ write packet   (and back)
//!                                   RTT/2
//! ```
//!
//! Both TCP stacks are the kernel's, end to end: handshakes, windows, ACK
//! clocking and retransmissions see the real round trip, as over `netem`.
//! Each direction is a FIFO on one thread (every IP packet is stamped with
//! its due time as it is read and written out then), so nothing is
//! reordered and the delay is the same for every packet, give or take the
//! timer (the thread's timer slack is set to 1 ns) and the 20 µs burst.
//!
//! Usage: `delay_line <host-tun> <netns-name> <inner-tun> <one-way-µs>`.
//! It opens `<host-tun>` here and `<inner-tun>` inside the namespace
//! (`/var/run/netns/<netns-name>`), prints `ready`, and forwards until its
//! stdin closes; each line on stdin is a new one-way delay in µs (packets
//! read from then on), so one path serves several scenarios. The caller
//! configures addresses, MTU and links. The devices are not persistent:
//! they vanish when this process ends. Root only (TUNSETIFF, setns).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `_IOW('T', 202, int)` from `linux/if_tun.h`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;
/// Bytes held per direction before packets are dropped, as a router's
/// queue would drop them: far above any window this bench opens (Linux
/// caps a receive window at `tcp_rmem`'s 6 MiB by default), so at these
/// rates it only bounds memory.
const MAX_QUEUED_BYTES: usize = 64 << 20;
/// The largest IP packet a TUN device with a 64 KiB MTU hands over.
const MAX_PACKET: usize = 65_536;

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

fn open_tun(name: &str) -> io::Result<File> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface name {name:?}: 1 to 15 bytes"),
        ));
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: IFF_TUN | IFF_NO_PI,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which `req`
    // is laid out as (name, then a union starting with the flags).
    if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file)
}

/// Moves this thread into the network namespace `name` (as `ip netns
/// exec` does), so the next TUN device is created there.
fn enter_netns(name: &str) -> io::Result<()> {
    let ns = File::open(format!("/var/run/netns/{name}"))?;
    // SAFETY: setns on a namespace file descriptor we own.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Packets due within this much of the first are written with it, as a
/// NIC's interrupt moderation delivers a burst: one wake-up for several
/// packets instead of one each.
const BURST: Duration = Duration::from_micros(20);

fn set_nonblocking(file: &File) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own, with integer arguments.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Waits until `file` is readable or `timeout` (None: forever) passes.
fn wait_readable(file: &File, timeout: Option<Duration>) {
    let mut pfd = libc::pollfd {
        fd: file.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs() as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: one pollfd and an optional timespec that live across the call.
    unsafe { libc::ppoll(&mut pfd, 1, ts_ptr, std::ptr::null()) };
}

/// One direction, on one thread: packets read from `from` are written to
/// `to` the current delay after they were read, in order. One thread (no hand-off
/// between a reader and a writer) keeps the line's own CPU per packet low;
/// it is reported by the bench because it shares the machine.
fn forward(mut from: File, mut to: File, delay_us: Arc<AtomicU64>, dropped: Arc<AtomicUsize>) {
    // SAFETY: prctl with an integer argument; affects this thread only.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
    let mut queue: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut queued = 0usize;
    let mut buf = vec![0u8; MAX_PACKET];
    loop {
        let timeout = queue
            .front()
            .map(|(due, _)| due.saturating_duration_since(Instant::now()));
        if timeout != Some(Duration::ZERO) {
            wait_readable(&from, timeout);
        }
        // Everything that arrived, stamped as it is read.
        let delay = Duration::from_micros(delay_us.load(Ordering::Relaxed));
        loop {
            match from.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if queued + n > MAX_QUEUED_BYTES {
                        dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    queued += n;
                    queue.push_back((Instant::now() + delay, buf[..n].to_vec()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
        }
        // Everything due, and what falls due within the burst.
        let until = Instant::now() + BURST;
        while queue.front().is_some_and(|(due, _)| *due <= until) {
            let Some((_, packet)) = queue.pop_front() else {
                break;
            };
            queued -= packet.len();
            // A write fails while the other device is still down (it is
            // brought up after we start) or already gone: the packet is
            // lost, as on a link that is not up. The process ends when its
            // stdin closes, not here.
            if to.write_all(&packet).is_err() {
                dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn parse_us(text: &str) -> io::Result<u64> {
    text.parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("one-way delay {text:?}: microseconds, e.g. 500"),
        )
    })
}

fn run(args: &[String]) -> io::Result<()> {
    let [host_tun, netns, inner_tun, one_way_us] = args else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "usage: delay_line <host-tun> <netns-name> <inner-tun> <one-way-µs>",
        ));
    };
    let delay_us = Arc::new(AtomicU64::new(parse_us(one_way_us)?));
    let host = open_tun(host_tun)?;
    enter_netns(netns)?;
    let inner = open_tun(inner_tun)?;
    set_nonblocking(&host)?;
    set_nonblocking(&inner)?;
    let dropped = Arc::new(AtomicUsize::new(0));
    for (from, to) in [(host.try_clone()?, inner.try_clone()?), (inner, host)] {
        let (delay_us, dropped) = (delay_us.clone(), dropped.clone());
        std::thread::spawn(move || forward(from, to, delay_us, dropped));
    }
    println!("ready");
    io::stdout().flush()?;
    // New delays, until the caller closes our stdin (or dies).
    for line in io::stdin().lock().lines() {
        let line = line?;
        delay_us.store(parse_us(line.trim())?, Ordering::Relaxed);
        println!("delay {}", line.trim());
        io::stdout().flush()?;
    }
    eprintln!(
        "delay_line: {} packets dropped (over {MAX_QUEUED_BYTES} queued bytes, or a device down)",
        dropped.load(Ordering::Relaxed)
    );
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args) {
        eprintln!("delay_line: {e}");
        std::process::exit(1);
    }
}
