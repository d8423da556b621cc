//! Unit tests of the interpreter, one group of opcodes at a time.

use super::*;

const RET_A: Instruction = Instruction::stmt(BPF_RET | BPF_A, 0);

fn stmt(code: u16, k: u32) -> Instruction {
    Instruction::stmt(code, k)
}

/// Runs `body` followed by `ret a` on `skb`.
fn eval(body: &[Instruction], skb: &Skb<'_>) -> Result<u32, InterpError> {
    let mut instructions = body.to_vec();
    instructions.push(RET_A);
    run(&Program::new(instructions), skb)
}

const PACKET: [u8; 8] = [0x45, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07];

fn skb() -> Skb<'static> {
    Skb::received(&PACKET, 0x0800)
}

#[test]
fn absolute_loads_of_each_size() {
    let s = skb();
    assert_eq!(
        eval(&[stmt(BPF_LD | BPF_W | BPF_ABS, 1)], &s),
        Ok(0x0102_0304)
    );
    assert_eq!(eval(&[stmt(BPF_LD | BPF_H | BPF_ABS, 6)], &s), Ok(0x0607));
    assert_eq!(eval(&[stmt(BPF_LD | BPF_B | BPF_ABS, 7)], &s), Ok(0x07));
    assert_eq!(
        eval(&[stmt(BPF_LD | BPF_W | BPF_ABS, SKF_NET_OFF + 4)], &s),
        Ok(0x0405_0607)
    );
}

#[test]
fn out_of_bounds_loads_end_the_program_with_zero() {
    let s = skb();
    // `ld #7` first, so a result of 0 can only come from the failed load ending the program.
    let then = |load: Instruction| eval(&[stmt(BPF_LD | BPF_IMM, 7), load], &s);
    assert_eq!(then(stmt(BPF_LD | BPF_W | BPF_ABS, 5)), Ok(0));
    assert_eq!(then(stmt(BPF_LD | BPF_H | BPF_ABS, 7)), Ok(0));
    assert_eq!(then(stmt(BPF_LD | BPF_B | BPF_ABS, 8)), Ok(0));
    assert_eq!(then(stmt(BPF_LD | BPF_B | BPF_ABS, SKF_NET_OFF + 8)), Ok(0));
    assert_eq!(then(stmt(BPF_LD | BPF_B | BPF_ABS, SKF_LL_OFF - 1)), Ok(0));
    assert_eq!(then(stmt(BPF_LD | BPF_B | BPF_ABS, 0x7fff_ffff)), Ok(0));
    assert_eq!(then(stmt(BPF_LDX | BPF_B | BPF_MSH, 8)), Ok(0));
    // In bounds, the same program returns what it loaded.
    assert_eq!(then(stmt(BPF_LD | BPF_B | BPF_ABS, 1)), Ok(1));
}

#[test]
fn indirect_loads_add_x() {
    let s = skb();
    let load = |code: u16, x: u32, k: u32| eval(&[stmt(BPF_LDX | BPF_IMM, x), stmt(code, k)], &s);
    assert_eq!(load(BPF_LD | BPF_H | BPF_IND, 2, 1), Ok(0x0304));
    assert_eq!(load(BPF_LD | BPF_W | BPF_IND, 4, 0), Ok(0x0405_0607));
    assert_eq!(load(BPF_LD | BPF_B | BPF_IND, 4, SKF_NET_OFF + 2), Ok(0x06));
    assert_eq!(
        load(BPF_LD | BPF_B | BPF_IND, 4, 4),
        Ok(0),
        "8 is past the end"
    );
    // X + k wraps as the kernel's 32-bit offset does: 10 + (-3) = 7.
    assert_eq!(load(BPF_LD | BPF_B | BPF_IND, 10, (-3i32) as u32), Ok(0x07));
}

#[test]
fn network_and_link_offsets_follow_the_data_start() {
    let link = [0xaa, 0xbb];
    let out = Skb::outgoing(&link, &PACKET, 0x0800);
    // Data starts at the link header: offset 0 is the first link byte, 2 the network header.
    assert_eq!(eval(&[stmt(BPF_LD | BPF_B | BPF_ABS, 0)], &out), Ok(0xaa));
    assert_eq!(eval(&[stmt(BPF_LD | BPF_H | BPF_ABS, 1)], &out), Ok(0xbb45));
    assert_eq!(
        eval(&[stmt(BPF_LD | BPF_B | BPF_ABS, SKF_NET_OFF)], &out),
        Ok(0x45)
    );
    assert_eq!(
        eval(&[stmt(BPF_LD | BPF_B | BPF_ABS, SKF_LL_OFF + 1)], &out),
        Ok(0xbb)
    );
    assert_eq!(eval(&[stmt(BPF_LD | BPF_W | BPF_LEN, 0)], &out), Ok(10));
    let received = skb();
    assert_eq!(
        eval(&[stmt(BPF_LD | BPF_B | BPF_ABS, SKF_NET_OFF)], &received),
        Ok(0x45)
    );
    assert_eq!(eval(&[stmt(BPF_LD | BPF_W | BPF_LEN, 0)], &received), Ok(8));
}

#[test]
fn immediate_length_msh_and_x_loads() {
    let s = skb();
    assert_eq!(eval(&[stmt(BPF_LD | BPF_IMM, 0xdead)], &s), Ok(0xdead));
    let via_x = |load: Instruction| eval(&[load, stmt(BPF_MISC | BPF_TXA, 0)], &s);
    assert_eq!(via_x(stmt(BPF_LDX | BPF_IMM, 9)), Ok(9));
    assert_eq!(via_x(stmt(BPF_LDX | BPF_W | BPF_LEN, 0)), Ok(8));
    assert_eq!(
        via_x(stmt(BPF_LDX | BPF_B | BPF_MSH, 0)),
        Ok(20),
        "4 * (0x45 & 0xf)"
    );
    assert_eq!(
        via_x(stmt(BPF_LDX | BPF_B | BPF_MSH, SKF_NET_OFF + 7)),
        Ok(28)
    );
}

#[test]
fn scratch_memory_round_trips_all_sixteen_words() {
    let s = skb();
    let mut body = Vec::new();
    for word in 0..BPF_MEMWORDS {
        body.push(stmt(BPF_LD | BPF_IMM, 100 + word));
        body.push(stmt(BPF_ST, word));
        body.push(stmt(BPF_LDX | BPF_IMM, 200 + word));
        body.push(stmt(BPF_STX, (word + 1) % BPF_MEMWORDS));
    }
    // Word 0 was last written by STX of the final iteration (215); word 5 by ST (105) after
    // the STX of iteration 4 (204).
    let load_a = |word: u32| [body.as_slice(), &[stmt(BPF_LD | BPF_MEM, word)]].concat();
    assert_eq!(eval(&load_a(0), &s), Ok(215));
    assert_eq!(eval(&load_a(5), &s), Ok(105));
    let load_x = [
        body.as_slice(),
        &[stmt(BPF_LDX | BPF_MEM, 9), stmt(BPF_MISC | BPF_TXA, 0)],
    ];
    assert_eq!(eval(&load_x.concat(), &s), Ok(109));
}

#[test]
fn alu_with_constant_and_x() {
    let s = skb();
    let cases: [(u16, u32, u32, u32); 11] = [
        (BPF_ADD, 0xffff_fff0, 0x20, 0x10),
        (BPF_SUB, 1, 2, 0xffff_ffff),
        (BPF_MUL, 0x9E37_79B1, 3, 0x9E37_79B1u32.wrapping_mul(3)),
        (BPF_DIV, 100, 7, 14),
        (BPF_MOD, 100, 7, 2),
        (BPF_AND, 0xf0f0, 0xff00, 0xf000),
        (BPF_OR, 0xf0f0, 0x0f00, 0xfff0),
        (BPF_XOR, 0xf0f0, 0xff00, 0x0ff0),
        (BPF_LSH, 0x8000_0001, 4, 0x0000_0010),
        (BPF_RSH, 0x8000_0000, 31, 1),
        (BPF_RSH, 0xffff_ffff, 0, 0xffff_ffff),
    ];
    for (op, a, operand, expected) in cases {
        let with_k = [
            stmt(BPF_LD | BPF_IMM, a),
            stmt(BPF_ALU | op | BPF_K, operand),
        ];
        assert_eq!(eval(&with_k, &s), Ok(expected), "op {op:#x} K");
        let with_x = [
            stmt(BPF_LD | BPF_IMM, a),
            stmt(BPF_LDX | BPF_IMM, operand),
            stmt(BPF_ALU | op | BPF_X, 0),
        ];
        assert_eq!(eval(&with_x, &s), Ok(expected), "op {op:#x} X");
    }
    let neg = [stmt(BPF_LD | BPF_IMM, 5), stmt(BPF_ALU | BPF_NEG, 0)];
    assert_eq!(eval(&neg, &s), Ok(5u32.wrapping_neg()));
}

#[test]
fn division_by_zero_x_returns_zero_and_shifts_by_x_mask() {
    let s = skb();
    for op in [BPF_DIV, BPF_MOD] {
        let body = [stmt(BPF_LD | BPF_IMM, 9), stmt(BPF_ALU | op | BPF_X, 0)];
        assert_eq!(eval(&body, &s), Ok(0), "op {op:#x} by X = 0");
    }
    let shift = [
        stmt(BPF_LD | BPF_IMM, 1),
        stmt(BPF_LDX | BPF_IMM, 33),
        stmt(BPF_ALU | BPF_LSH | BPF_X, 0),
    ];
    assert_eq!(eval(&shift, &s), Ok(2), "shift count taken modulo 32");
}

#[test]
fn jumps_take_the_right_branch() {
    let s = skb();
    // A = a; X = x; jump op: true → ret #1, false → ret #2.
    let branch = |op: u16, source: u16, a: u32, x: u32, k: u32| {
        let program = Program::new(vec![
            stmt(BPF_LD | BPF_IMM, a),
            stmt(BPF_LDX | BPF_IMM, x),
            Instruction::jump(BPF_JMP | op | source, k, 0, 1),
            stmt(BPF_RET | BPF_K, 1),
            stmt(BPF_RET | BPF_K, 2),
        ]);
        run(&program, &s)
    };
    for source in [BPF_K, BPF_X] {
        let (x, k) = if source == BPF_X { (5, 0) } else { (0, 5) };
        assert_eq!(branch(BPF_JEQ, source, 5, x, k), Ok(1));
        assert_eq!(branch(BPF_JEQ, source, 6, x, k), Ok(2));
        assert_eq!(branch(BPF_JGT, source, 6, x, k), Ok(1));
        assert_eq!(branch(BPF_JGT, source, 5, x, k), Ok(2));
        assert_eq!(branch(BPF_JGE, source, 5, x, k), Ok(1));
        assert_eq!(branch(BPF_JGE, source, 4, x, k), Ok(2));
        assert_eq!(branch(BPF_JSET, source, 4, x, k), Ok(1));
        assert_eq!(branch(BPF_JSET, source, 2, x, k), Ok(2));
        // Unsigned comparison: 0xffff_ffff > 5.
        assert_eq!(branch(BPF_JGT, source, u32::MAX, x, k), Ok(1));
    }
    let ja = Program::new(vec![
        stmt(BPF_JMP | BPF_JA, 1),
        stmt(BPF_RET | BPF_K, 1),
        stmt(BPF_RET | BPF_K, 3),
    ]);
    assert_eq!(run(&ja, &s), Ok(3));
}

#[test]
fn returns_and_register_transfers() {
    let s = skb();
    assert_eq!(
        run(&Program::new(vec![stmt(BPF_RET | BPF_K, 42)]), &s),
        Ok(42)
    );
    let tax = [
        stmt(BPF_LD | BPF_IMM, 11),
        stmt(BPF_MISC | BPF_TAX, 0),
        stmt(BPF_LD | BPF_IMM, 0),
    ];
    let tax_back = [tax.as_slice(), &[stmt(BPF_MISC | BPF_TXA, 0)]].concat();
    assert_eq!(eval(&tax_back, &s), Ok(11));
    assert_eq!(eval(&[], &s), Ok(0), "A starts at 0");
}

#[test]
fn ancillary_loads_read_metadata() {
    let mut s = skb();
    s.ifindex = 7;
    s.mark = 0x55;
    s.queue_mapping = 3;
    s.hash = 0xabcd;
    s.cpu = 1;
    s.random = 99;
    s.vlan = Some(VlanTag {
        tpid: 0x88a8,
        tci: 0x2064,
    });
    let load = |offset: u32| eval(&[stmt(BPF_LD | BPF_W | BPF_ABS, SKF_AD_OFF + offset)], &s);
    assert_eq!(load(SKF_AD_PROTOCOL), Ok(0x0800));
    assert_eq!(load(SKF_AD_PKTTYPE), Ok(2));
    assert_eq!(load(SKF_AD_IFINDEX), Ok(7));
    assert_eq!(load(SKF_AD_MARK), Ok(0x55));
    assert_eq!(load(SKF_AD_QUEUE), Ok(3));
    assert_eq!(load(SKF_AD_HATYPE), Ok(1));
    assert_eq!(load(SKF_AD_RXHASH), Ok(0xabcd));
    assert_eq!(load(SKF_AD_CPU), Ok(1));
    assert_eq!(load(SKF_AD_RANDOM), Ok(99));
    assert_eq!(load(SKF_AD_VLAN_TAG), Ok(0x2064));
    assert_eq!(load(SKF_AD_VLAN_TAG_PRESENT), Ok(1));
    assert_eq!(load(SKF_AD_VLAN_TPID), Ok(0x88a8));
    assert_eq!(
        load(SKF_AD_PAY_OFFSET),
        Err(InterpError::UnsupportedAncillary { at: 0, offset: 52 })
    );
    let xor = [
        stmt(BPF_LD | BPF_IMM, 0xf0),
        stmt(BPF_LDX | BPF_IMM, 0xff),
        stmt(BPF_LD | BPF_B | BPF_ABS, SKF_AD_OFF + SKF_AD_ALU_XOR_X),
    ];
    assert_eq!(eval(&xor, &s), Ok(0x0f));
    s.vlan = None;
    let untagged = eval(
        &[stmt(
            BPF_LD | BPF_W | BPF_ABS,
            SKF_AD_OFF + SKF_AD_VLAN_TAG_PRESENT,
        )],
        &s,
    );
    assert_eq!(untagged, Ok(0));
}

#[test]
fn invalid_programs_are_refused_before_running() {
    let s = skb();
    let bad = Program::new(vec![stmt(BPF_ALU | BPF_DIV | BPF_K, 0), RET_A]);
    assert_eq!(
        run(&bad, &s),
        Err(InterpError::Invalid(ProgramError::DivisionByZero { at: 0 }))
    );
    assert!(Interpreter::new(&Program::default()).is_err());
}
