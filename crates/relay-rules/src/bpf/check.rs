//! The static checks the kernel runs on a classic BPF program before accepting it
//! (`bpf_check_classic` and `check_load_and_stores` in `net/core/filter.c`).
//!
//! The kernel answers every failure with a bare EINVAL; running the same checks here first turns
//! that into an error that says which instruction broke which rule.

use super::*;
use thiserror::Error;

/// Why the kernel would refuse a program, and at which instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ProgramError {
    /// A program must have 1..=4096 instructions.
    #[error("program has {0} instructions; the kernel takes 1..={BPF_MAXINSNS}")]
    Length(usize),
    /// The opcode is not one the kernel's classic BPF knows.
    #[error("instruction {at}: unknown opcode {code:#06x}")]
    UnknownOpcode {
        /// Index of the instruction.
        at: usize,
        /// The opcode found.
        code: u16,
    },
    /// Division or modulo by the constant 0.
    #[error("instruction {at}: division by constant 0")]
    DivisionByZero {
        /// Index of the instruction.
        at: usize,
    },
    /// A shift by a constant of 32 or more.
    #[error("instruction {at}: shift by {shift}, the kernel takes 0..=31")]
    ShiftTooLarge {
        /// Index of the instruction.
        at: usize,
        /// The shift found.
        shift: u32,
    },
    /// A scratch memory index beyond the 16 words.
    #[error("instruction {at}: scratch word {index} does not exist (0..{BPF_MEMWORDS})")]
    ScratchIndex {
        /// Index of the instruction.
        at: usize,
        /// The scratch index found.
        index: u32,
    },
    /// A jump lands at or past the end of the program.
    #[error("instruction {at}: jump lands past the last instruction")]
    JumpOutOfRange {
        /// Index of the instruction.
        at: usize,
    },
    /// An ancillary load (`k >= SKF_AD_OFF`) the kernel does not know.
    #[error("instruction {at}: unknown ancillary load {offset:#x}")]
    UnknownAncillary {
        /// Index of the instruction.
        at: usize,
        /// The offset after `SKF_AD_OFF`.
        offset: u32,
    },
    /// The last instruction is not a return.
    #[error("the last instruction is not a return")]
    NoFinalReturn,
    /// A scratch word is read on some path before anything was stored in it.
    #[error("instruction {at}: scratch word {index} may be read before it is written")]
    UninitializedScratch {
        /// Index of the instruction.
        at: usize,
        /// The scratch index read.
        index: u32,
    },
}

/// Checks `program` as the kernel does when it is attached (as a socket filter or as a fanout
/// program): length, known opcodes, constant divisors, shift amounts, scratch indices, jump
/// targets, ancillary loads, a final return, and scratch words written before they are read.
///
/// Run it before handing a program to the kernel, to get a reason instead of EINVAL.
pub fn validate_program(program: &Program) -> Result<(), ProgramError> {
    let instructions = program.instructions();
    let len = instructions.len();
    if len == 0 || len > BPF_MAXINSNS {
        return Err(ProgramError::Length(len));
    }
    for (at, insn) in instructions.iter().enumerate() {
        check_instruction(at, insn, len)?;
    }
    let last = instructions[len - 1].code;
    if last != BPF_RET | BPF_K && last != BPF_RET | BPF_A {
        return Err(ProgramError::NoFinalReturn);
    }
    check_load_and_stores(instructions)
}

/// Whether `code` is one of the opcodes the kernel's classic BPF accepts.
fn is_known_opcode(code: u16) -> bool {
    const ALU_OPS: [u16; 10] = [
        BPF_ADD, BPF_SUB, BPF_MUL, BPF_DIV, BPF_MOD, BPF_AND, BPF_OR, BPF_XOR, BPF_LSH, BPF_RSH,
    ];
    const JUMP_OPS: [u16; 4] = [BPF_JEQ, BPF_JGE, BPF_JGT, BPF_JSET];
    let class = code & 0x07;
    match class {
        BPF_ALU => {
            code == BPF_ALU | BPF_NEG
                || ALU_OPS
                    .iter()
                    .any(|&op| code == BPF_ALU | op | BPF_K || code == BPF_ALU | op | BPF_X)
        }
        BPF_JMP => {
            code == BPF_JMP | BPF_JA
                || JUMP_OPS
                    .iter()
                    .any(|&op| code == BPF_JMP | op | BPF_K || code == BPF_JMP | op | BPF_X)
        }
        _ => [
            BPF_LD | BPF_W | BPF_ABS,
            BPF_LD | BPF_H | BPF_ABS,
            BPF_LD | BPF_B | BPF_ABS,
            BPF_LD | BPF_W | BPF_LEN,
            BPF_LD | BPF_W | BPF_IND,
            BPF_LD | BPF_H | BPF_IND,
            BPF_LD | BPF_B | BPF_IND,
            BPF_LD | BPF_IMM,
            BPF_LD | BPF_MEM,
            BPF_LDX | BPF_W | BPF_LEN,
            BPF_LDX | BPF_B | BPF_MSH,
            BPF_LDX | BPF_IMM,
            BPF_LDX | BPF_MEM,
            BPF_ST,
            BPF_STX,
            BPF_MISC | BPF_TAX,
            BPF_MISC | BPF_TXA,
            BPF_RET | BPF_K,
            BPF_RET | BPF_A,
        ]
        .contains(&code),
    }
}

/// Whether `offset` (after `SKF_AD_OFF`) names an ancillary load the kernel implements.
fn is_known_ancillary(offset: u32) -> bool {
    offset <= SKF_AD_VLAN_TPID && offset.is_multiple_of(4)
}

fn check_instruction(at: usize, insn: &Instruction, len: usize) -> Result<(), ProgramError> {
    let code = insn.code;
    let k = insn.k;
    let is = |codes: &[u16]| codes.contains(&code);
    let divides = is(&[BPF_ALU | BPF_DIV | BPF_K, BPF_ALU | BPF_MOD | BPF_K]);
    let shifts = is(&[BPF_ALU | BPF_LSH | BPF_K, BPF_ALU | BPF_RSH | BPF_K]);
    let scratch = is(&[BPF_LD | BPF_MEM, BPF_LDX | BPF_MEM, BPF_ST, BPF_STX]);
    let conditional = code & 0x07 == BPF_JMP && code != BPF_JMP | BPF_JA;
    let absolute = code & 0x07 == BPF_LD && code & 0xe0 == BPF_ABS;
    let beyond = |offset: u8| at + usize::from(offset) + 1 >= len;
    match code {
        _ if !is_known_opcode(code) => Err(ProgramError::UnknownOpcode { at, code }),
        _ if divides && k == 0 => Err(ProgramError::DivisionByZero { at }),
        _ if shifts && k >= 32 => Err(ProgramError::ShiftTooLarge { at, shift: k }),
        _ if scratch && k >= BPF_MEMWORDS => Err(ProgramError::ScratchIndex { at, index: k }),
        // The kernel compares unsigned: k must be below len - at - 1.
        c if c == BPF_JMP | BPF_JA && u64::from(k) >= (len - at - 1) as u64 => {
            Err(ProgramError::JumpOutOfRange { at })
        }
        _ if conditional && (beyond(insn.jt) || beyond(insn.jf)) => {
            Err(ProgramError::JumpOutOfRange { at })
        }
        _ if absolute && k >= SKF_AD_OFF && !is_known_ancillary(k - SKF_AD_OFF) => {
            Err(ProgramError::UnknownAncillary {
                at,
                offset: k - SKF_AD_OFF,
            })
        }
        _ => Ok(()),
    }
}

/// The kernel's `check_load_and_stores`: a forward pass keeping the set of scratch words written
/// on every path that reaches each instruction (jumps are forward only, so one pass suffices).
fn check_load_and_stores(instructions: &[Instruction]) -> Result<(), ProgramError> {
    let mut reaching = vec![u16::MAX; instructions.len()];
    let mut valid: u16 = 0;
    for (at, insn) in instructions.iter().enumerate() {
        valid &= reaching[at];
        let code = insn.code;
        if code == BPF_ST || code == BPF_STX {
            valid |= 1 << insn.k;
        } else if code == BPF_LD | BPF_MEM || code == BPF_LDX | BPF_MEM {
            if valid & (1 << insn.k) == 0 {
                return Err(ProgramError::UninitializedScratch { at, index: insn.k });
            }
        } else if code == BPF_JMP | BPF_JA {
            reaching[at + 1 + insn.k as usize] &= valid;
            valid = u16::MAX;
        } else if code & 0x07 == BPF_JMP {
            reaching[at + 1 + usize::from(insn.jt)] &= valid;
            reaching[at + 1 + usize::from(insn.jf)] &= valid;
            valid = u16::MAX;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn program(instructions: &[Instruction]) -> Program {
        Program::new(instructions.to_vec())
    }

    const RET_A: Instruction = Instruction::stmt(BPF_RET | BPF_A, 0);

    #[test]
    fn length_limits() {
        assert_eq!(
            validate_program(&program(&[])),
            Err(ProgramError::Length(0))
        );
        let longest = vec![Instruction::stmt(BPF_RET | BPF_K, 0); BPF_MAXINSNS];
        assert_eq!(validate_program(&Program::new(longest.clone())), Ok(()));
        let mut too_long = longest;
        too_long.push(RET_A);
        assert_eq!(
            validate_program(&Program::new(too_long)),
            Err(ProgramError::Length(4097))
        );
    }

    #[test]
    fn unknown_opcodes_are_refused() {
        // BPF_LDX | BPF_H | BPF_ABS, BPF_ALU | 0xb0 (eBPF MOV), BPF_JMP | 0x50 (eBPF JNE).
        for code in [0x29u16, 0xb4, 0x55, 0x08, 0xffff] {
            let p = program(&[Instruction::stmt(code, 0), RET_A]);
            assert_eq!(
                validate_program(&p),
                Err(ProgramError::UnknownOpcode { at: 0, code })
            );
        }
    }

    #[test]
    fn constant_operands_are_checked() {
        let div0 = program(&[Instruction::stmt(BPF_ALU | BPF_DIV | BPF_K, 0), RET_A]);
        assert_eq!(
            validate_program(&div0),
            Err(ProgramError::DivisionByZero { at: 0 })
        );
        let mod0 = program(&[Instruction::stmt(BPF_ALU | BPF_MOD | BPF_K, 0), RET_A]);
        assert_eq!(
            validate_program(&mod0),
            Err(ProgramError::DivisionByZero { at: 0 })
        );
        let div_x = program(&[Instruction::stmt(BPF_ALU | BPF_DIV | BPF_X, 0), RET_A]);
        assert_eq!(
            validate_program(&div_x),
            Ok(()),
            "X is only known at run time"
        );
        let shift = program(&[Instruction::stmt(BPF_ALU | BPF_LSH | BPF_K, 32), RET_A]);
        assert_eq!(
            validate_program(&shift),
            Err(ProgramError::ShiftTooLarge { at: 0, shift: 32 })
        );
        let store = program(&[Instruction::stmt(BPF_ST, 16), RET_A]);
        assert_eq!(
            validate_program(&store),
            Err(ProgramError::ScratchIndex { at: 0, index: 16 })
        );
        let ancillary = program(&[
            Instruction::stmt(BPF_LD | BPF_W | BPF_ABS, SKF_AD_OFF + 64),
            RET_A,
        ]);
        assert_eq!(
            validate_program(&ancillary),
            Err(ProgramError::UnknownAncillary { at: 0, offset: 64 })
        );
        let net = program(&[
            Instruction::stmt(BPF_LD | BPF_W | BPF_ABS, SKF_NET_OFF + 16),
            RET_A,
        ]);
        assert_eq!(validate_program(&net), Ok(()));
    }

    #[test]
    fn jumps_stay_inside_the_program() {
        let ja_ok = program(&[Instruction::stmt(BPF_JMP | BPF_JA, 1), RET_A, RET_A]);
        assert_eq!(validate_program(&ja_ok), Ok(()));
        let ja_out = program(&[Instruction::stmt(BPF_JMP | BPF_JA, 1), RET_A]);
        assert_eq!(
            validate_program(&ja_out),
            Err(ProgramError::JumpOutOfRange { at: 0 })
        );
        let jeq_out = program(&[Instruction::jump(BPF_JMP | BPF_JEQ | BPF_K, 0, 0, 1), RET_A]);
        assert_eq!(
            validate_program(&jeq_out),
            Err(ProgramError::JumpOutOfRange { at: 0 })
        );
    }

    #[test]
    fn last_instruction_must_return() {
        let p = program(&[RET_A, Instruction::stmt(BPF_MISC | BPF_TAX, 0)]);
        assert_eq!(validate_program(&p), Err(ProgramError::NoFinalReturn));
    }

    #[test]
    fn scratch_must_be_written_on_every_path() {
        let read_first = program(&[Instruction::stmt(BPF_LD | BPF_MEM, 3), RET_A]);
        assert_eq!(
            validate_program(&read_first),
            Err(ProgramError::UninitializedScratch { at: 0, index: 3 })
        );
        // Only the true branch stores M[2]; the join point reads it.
        let one_path = program(&[
            Instruction::jump(BPF_JMP | BPF_JEQ | BPF_K, 0, 0, 1),
            Instruction::stmt(BPF_ST, 2),
            Instruction::stmt(BPF_LDX | BPF_MEM, 2),
            RET_A,
        ]);
        assert_eq!(
            validate_program(&one_path),
            Err(ProgramError::UninitializedScratch { at: 2, index: 2 })
        );
        let both_paths = program(&[
            Instruction::stmt(BPF_ST, 2),
            Instruction::jump(BPF_JMP | BPF_JEQ | BPF_K, 0, 0, 1),
            Instruction::stmt(BPF_ST, 5),
            Instruction::stmt(BPF_LDX | BPF_MEM, 2),
            RET_A,
        ]);
        assert_eq!(validate_program(&both_paths), Ok(()));
    }
}
