//! Ports for test and benchmark stacks: free blocks below the ephemeral range.

use std::sync::atomic::{AtomicU16, Ordering};

/// Ports every home reserves (all `[ports]` keys, with room to spare).
const BLOCK: u16 = 20;

static NEXT_BASE: AtomicU16 = AtomicU16::new(0);

/// The first port the kernel hands out for outgoing connections: test ports stay below
/// it, or a service stopped by a test could find its port taken by some client's socket
/// when it starts again (seen: SeaweedFS's filer gRPC port).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

/// A block of BLOCK free consecutive ports in 10000..ephemeral_low(); distinct per
/// call, and per process by pid (a run uses ~1000 ports; runs start 1400 apart).
pub fn free_port_block() -> u16 {
    const LOW: u16 = 10000;
    let high = ephemeral_low().max(LOW + 20 * BLOCK);
    let blocks = (high - LOW) / BLOCK;
    let _ = NEXT_BASE.compare_exchange(
        0,
        (std::process::id() % 64) as u16 * 70 % blocks,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..blocks {
        let base = LOW + NEXT_BASE.fetch_add(1, Ordering::SeqCst) % blocks * BLOCK;
        if (base..base + BLOCK).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return base;
        }
    }
    panic!("no free block of {BLOCK} ports below {high}");
}
