// Generator of ryu-1.0.23.txt: a throwaway crate with `ryu = "=1.0.23"` (the ryu of the
// real backend's serde_json 1.0.145, convex-backend Cargo.lock) and this as src/main.rs;
// `cargo run > ryu-1.0.23.txt`. Not built by this project.
// Prints "<f64 bits hex> <ryu format_finite>" for edge cases and pseudo-random doubles.
fn main() {
    let mut vals: Vec<f64> = vec![
        0.0, -0.0, 1.0, 2.0, -2.0, 0.1, 0.5, 1.5, 100.0, 123.456, 1e15, 1e16, 1e17, 9007199254740991.0,
        9007199254740992.0, 1e21, 1e22, 1.5e300, 1e-4, 1e-5, 1e-6, 1e-7, 0.00012345, 0.000012345,
        1234567890123456.0, 12345678901234567.0, 5e-324, f64::MAX, f64::MIN_POSITIVE, 1.7976931348623157e308,
        4294967295.0, 4294967296.0, 1e100, 123e-20, 0.3, 2.5e-5, 33.0, 1.0 / 3.0,
    ];
    let mut x: u64 = 0x9E3779B97F4A7C15;
    for i in 0..600 {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        let f = match i % 3 {
            0 => f64::from_bits(x),
            1 => (x % 100_000_000) as f64 / 1000.0,
            _ => (x >> 11) as f64 * 2f64.powi((x % 120) as i32 - 60),
        };
        if f.is_finite() { vals.push(f); }
    }
    let mut b = ryu::Buffer::new();
    for v in vals { println!("{:016x} {}", v.to_bits(), b.format_finite(v)); }
}
