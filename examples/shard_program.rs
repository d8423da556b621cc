//! The classic BPF program that steers each packet to the worker holding its rule, printed,
//! checked, and shown to agree with the shard function it computes.
//!
//! Under `shard` placement worker k holds only the rules whose `shard(group, port, WORKERS)` is
//! k, and the fanout group runs `steering_program(WORKERS)` (PACKET_FANOUT_CBPF) so the kernel
//! delivers every packet to that worker. The two must agree on every key, bit for bit. This
//! example prints the program as `{ code, jt, jf, k }` rows (the layout of the kernel's
//! `struct sock_filter`, as `tcpdump -dd` prints), runs the kernel's static checks on it, runs it
//! in the interpreter on a few IPv4/UDP headers laid out as the kernel's fanout hook sees them
//! (data starting at the IPv4 header), and compares each result with `shard()`. The rows are
//! printed from fanout-core's `BpfInstruction`s, which a worker passes to
//! `FanoutConfig::cbpf_program` for its receive ring.
//!
//! ```text
//! cargo run -p fanout-relay-examples --example shard_program -- WORKERS
//! ```
//!
//! Needs no privileges: nothing here talks to the kernel. Exits non-zero on any disagreement.
//!
//! # Try it
//!
//! ```text
//! cargo run -q -p fanout-relay-examples --example shard_program -- 4
//! ```

use std::error::Error;
use std::net::Ipv4Addr;
use std::process::ExitCode;

use fanout_core::BpfInstruction;
use relay_rules::bpf::interp::{Interpreter, Skb};
use relay_rules::bpf::{BPF_A, BPF_ALU, BPF_JMP, BPF_LD, BPF_LDX, BPF_RET, BPF_ST, BPF_STX};
use relay_rules::bpf::{BPF_TXA, BPF_X, steering_program, validate_program};
use relay_rules::shard::shard;

/// EtherType of IPv4, as the kernel reports `skb->protocol` to the program.
const ETH_P_IP: u16 = 0x0800;

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("shard_program: {error}");
            ExitCode::FAILURE
        }
    }
}

/// True when the program and `shard()` agreed on every key.
fn run() -> Result<bool, Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [workers] = args.as_slice() else {
        return Err("usage: shard_program WORKERS".into());
    };
    let workers: u32 = match workers.parse() {
        Ok(n) if n > 0 => n,
        _ => return Err(format!("WORKERS must be a count of 1 or more, not {workers:?}").into()),
    };

    let program = steering_program(workers);
    validate_program(&program)?;
    // What each worker hands fanout-core: FanoutConfig::new(group, FanoutMode::Cbpf)
    //     .cbpf_program(kernel), given to its RxRingBuilder::fanout.
    let kernel = program.to_kernel()?;
    let instructions = kernel.instructions();
    println!(
        "steering_program({workers}): {} instructions, accepted by the kernel's checks",
        instructions.len()
    );
    for (at, BpfInstruction { code, jt, jf, k }) in instructions.iter().enumerate() {
        println!(
            "  {{ {code:#06x}, {jt:>2}, {jf:>2}, {k:#010x} }},  // {at:>2} {}",
            mnemonic(*code)
        );
    }

    // Check once; run on every packet.
    let interpreter = Interpreter::new(&program)?;
    let keys = [
        ("239.1.1.1", 5000, 0),
        ("239.1.1.2", 5000, 0),
        ("239.1.1.3", 5000, 0),
        ("239.1.1.1", 5001, 0),
        ("232.10.20.30", 20000, 0),
        ("239.1.2.3", 5000, 1), // one word of IP options: the port moves, the shard does not
    ];
    let mut agree = true;
    for (group, port, option_words) in keys {
        let group: Ipv4Addr = group.parse()?;
        let packet = ipv4_udp(group, port, option_words);
        let steered = interpreter.run(&Skb::received(&packet, ETH_P_IP))?;
        let expected = shard(group, port, workers);
        agree &= steered == expected;
        let verdict = if steered == expected {
            "agree"
        } else {
            "DIFFER"
        };
        let key = format!("{group}:{port}");
        println!("  {key:<21} shard() = {expected}, program = {steered}  {verdict}");
    }
    // Anything but IPv4/UDP goes to worker 0, which counts it like any worker would.
    let mut tcp = ipv4_udp(Ipv4Addr::new(239, 1, 1, 1), 5000, 0);
    tcp[9] = 6;
    let steered = interpreter.run(&Skb::received(&tcp, ETH_P_IP))?;
    agree &= steered == 0;
    println!("  a TCP packet: program = {steered} (worker 0)");
    Ok(agree)
}

/// An IPv4 header with `option_words` words of options (NOPs), then a UDP header, from
/// 192.0.2.1:40000 to `group:port`: the bytes a received skb's data starts with at the fanout
/// hook (the Ethernet header already pulled off, a VLAN tag already moved into metadata).
fn ipv4_udp(group: Ipv4Addr, port: u16, option_words: usize) -> Vec<u8> {
    let header_len = 20 + 4 * option_words;
    let mut packet = vec![0u8; header_len + 8];
    let total_len = u16::try_from(packet.len()).expect("at most 15 header words and 8 bytes");
    packet[0] = 0x40 | u8::try_from(header_len / 4).expect("IHL is at most 15");
    packet[2..4].copy_from_slice(&total_len.to_be_bytes());
    packet[8] = 64; // TTL
    packet[9] = 17; // UDP
    packet[12..16].copy_from_slice(&[192, 0, 2, 1]);
    packet[16..20].copy_from_slice(&group.octets());
    packet[20..header_len].fill(1); // NOP options
    packet[header_len..header_len + 2].copy_from_slice(&40000u16.to_be_bytes());
    packet[header_len + 2..header_len + 4].copy_from_slice(&port.to_be_bytes());
    packet[header_len + 4..header_len + 6].copy_from_slice(&8u16.to_be_bytes());
    packet
}

/// A short name of the operation, to make the listing readable: `ldh`, `jeq k`, `xor x`, ...
fn mnemonic(code: u16) -> String {
    const LOADS: [&str; 4] = ["ld", "ldh", "ldb", "ld?"];
    const ALU: [&str; 11] = [
        "add", "sub", "mul", "div", "or", "and", "lsh", "rsh", "neg", "mod", "xor",
    ];
    const JUMPS: [&str; 5] = ["ja", "jeq", "jgt", "jge", "jset"];
    let op = usize::from(code >> 4);
    let operand = if code & BPF_X == 0 { "k" } else { "x" };
    let name = match code & 0x07 {
        BPF_LD => LOADS[usize::from(code >> 3 & 0x03)],
        BPF_LDX => "ldx",
        BPF_ST => "st",
        BPF_STX => "stx",
        BPF_ALU => return format!("{} {operand}", ALU.get(op).unwrap_or(&"alu?")),
        BPF_JMP => return format!("{} {operand}", JUMPS.get(op).unwrap_or(&"jmp?")),
        BPF_RET if code & BPF_A != 0 => "ret a",
        BPF_RET => "ret k",
        _ if code & BPF_TXA != 0 => "txa",
        _ => "tax",
    };
    name.to_owned()
}
