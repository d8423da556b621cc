//! Classic BPF programs: socket filters (`SO_ATTACH_FILTER`, detach, lock) and the program type
//! a cBPF fanout group runs.
//!
//! fanout-core defines its own instruction type, identical in layout to the kernel's
//! `struct sock_filter`, so that rule compilers need not depend on this crate's internals and this
//! crate need not depend on them.

use std::os::fd::BorrowedFd;

use nix::errno::Errno;

use crate::sys;

/// One classic BPF instruction, laid out exactly like `struct sock_filter`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BpfInstruction {
    /// Opcode (`BPF_LD | BPF_W | BPF_ABS`, ...).
    pub code: u16,
    /// Jump offset if true.
    pub jt: u8,
    /// Jump offset if false.
    pub jf: u8,
    /// Generic operand: offset, constant or return value.
    pub k: u32,
}

const _: () = assert!(
    size_of::<BpfInstruction>() == size_of::<libc::sock_filter>()
        && align_of::<BpfInstruction>() == align_of::<libc::sock_filter>()
        && std::mem::offset_of!(BpfInstruction, k) == std::mem::offset_of!(libc::sock_filter, k)
        && std::mem::offset_of!(BpfInstruction, jf) == std::mem::offset_of!(libc::sock_filter, jf)
);

impl BpfInstruction {
    /// A non-jump instruction.
    pub const fn statement(code: u16, k: u32) -> Self {
        Self {
            code,
            jt: 0,
            jf: 0,
            k,
        }
    }

    /// A conditional jump.
    pub const fn jump(code: u16, k: u32, jt: u8, jf: u8) -> Self {
        Self { code, jt, jf, k }
    }
}

/// Opcodes used by the canned programs.
const BPF_RET_K: u16 = 0x06;

/// A classic BPF program of 1 to 4096 instructions (`BPF_MAXINSNS`); the kernel verifies the
/// rest when it is attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BpfProgram {
    instructions: Vec<BpfInstruction>,
}

/// Failures to build or install a classic BPF program.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BpfError {
    /// Programs need between 1 and `BPF_MAXINSNS` instructions.
    #[error("a classic BPF program needs 1 to 4096 instructions, this one has {len}")]
    BadLength {
        /// Instructions given.
        len: usize,
    },
    /// `setsockopt(SOL_SOCKET, option)` failed. EINVAL: the kernel's verifier refused the
    /// program; EPERM: the socket's filter is locked.
    #[error("setsockopt(SOL_SOCKET, {option}) failed: {errno}")]
    SetOption {
        /// `SO_ATTACH_FILTER`, `SO_DETACH_FILTER` or `SO_LOCK_FILTER`.
        option: &'static str,
        /// The errno.
        errno: Errno,
    },
}

impl BpfProgram {
    /// Checks the length; the kernel checks the instructions themselves at attach time.
    pub fn new(instructions: Vec<BpfInstruction>) -> Result<Self, BpfError> {
        if instructions.is_empty() || instructions.len() > 4096 {
            return Err(BpfError::BadLength {
                len: instructions.len(),
            });
        }
        Ok(Self { instructions })
    }

    /// `ret #0`: drops every frame; attach it first to drain a socket before the real filter.
    pub fn reject_all() -> Self {
        Self {
            instructions: vec![BpfInstruction::statement(BPF_RET_K, 0)],
        }
    }

    /// `ret #0xffffffff`: accepts every frame whole.
    pub fn accept_all() -> Self {
        Self {
            instructions: vec![BpfInstruction::statement(BPF_RET_K, u32::MAX)],
        }
    }

    /// This program behind a prefix that drops the frames this host sends (packet type
    /// `PACKET_OUTGOING`, read through the `SKF_AD_PKTTYPE` ancillary load): what
    /// `PACKET_IGNORE_OUTGOING` does, for kernels without it. The prefix leaves the accumulator
    /// 0 as a program finds it; jumps are relative, so the program's own still land right.
    /// Fails when the result is longer than 4096 instructions.
    pub fn dropping_outgoing(&self) -> Result<BpfProgram, BpfError> {
        const LD_W_ABS: u16 = 0x20;
        const LD_IMM: u16 = 0x00;
        const JEQ_K: u16 = 0x15;
        const SKF_AD_PKTTYPE: u32 = (libc::SKF_AD_OFF + libc::SKF_AD_PKTTYPE) as u32;
        let mut instructions = vec![
            BpfInstruction::statement(LD_W_ABS, SKF_AD_PKTTYPE),
            // Outgoing: fall through to the drop; otherwise skip it.
            BpfInstruction::jump(JEQ_K, u32::from(libc::PACKET_OUTGOING), 0, 1),
            BpfInstruction::statement(BPF_RET_K, 0),
            BpfInstruction::statement(LD_IMM, 0),
        ];
        instructions.extend_from_slice(&self.instructions);
        BpfProgram::new(instructions)
    }

    /// The instructions.
    pub fn instructions(&self) -> &[BpfInstruction] {
        &self.instructions
    }
}

/// Borrows a program as the kernel's `struct sock_fprog`; valid while `instructions` lives.
pub(crate) fn as_fprog(instructions: &[BpfInstruction]) -> Result<libc::sock_fprog, BpfError> {
    let len = u16::try_from(instructions.len())
        .ok()
        .filter(|&len| (1..=4096).contains(&len))
        .ok_or(BpfError::BadLength {
            len: instructions.len(),
        })?;
    Ok(libc::sock_fprog {
        len,
        // The kernel only reads the program (copy_from_user); the layout assertion above makes
        // the cast a reinterpretation of identical structs.
        filter: instructions.as_ptr().cast::<libc::sock_filter>().cast_mut(),
    })
}

/// Attaches `program` as the socket filter (`SO_ATTACH_FILTER`), replacing any previous one.
///
/// On a bound packet socket frames queued before this call were not filtered: attach before
/// binding (the ring builders do), or attach [`BpfProgram::reject_all`], drain, then the real one.
pub fn attach_filter(fd: BorrowedFd<'_>, program: &BpfProgram) -> Result<(), BpfError> {
    let fprog = as_fprog(program.instructions())?;
    sys::set_option(fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog).map_err(|errno| {
        BpfError::SetOption {
            option: "SO_ATTACH_FILTER",
            errno,
        }
    })
}

/// Removes the socket filter (`SO_DETACH_FILTER`); ENOENT if there was none.
pub fn detach_filter(fd: BorrowedFd<'_>) -> Result<(), BpfError> {
    let unused: libc::c_int = 0;
    sys::set_option(fd, libc::SOL_SOCKET, libc::SO_DETACH_FILTER, &unused).map_err(|errno| {
        BpfError::SetOption {
            option: "SO_DETACH_FILTER",
            errno,
        }
    })
}

/// Locks the socket filter (`SO_LOCK_FILTER`): from now on attach and detach fail with EPERM,
/// so a process that drops privileges cannot widen what it sees.
pub fn lock_filter(fd: BorrowedFd<'_>) -> Result<(), BpfError> {
    let on: libc::c_int = 1;
    sys::set_option(fd, libc::SOL_SOCKET, libc::SO_LOCK_FILTER, &on).map_err(|errno| {
        BpfError::SetOption {
            option: "SO_LOCK_FILTER",
            errno,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropping_outgoing_prefixes_a_packet_type_test_and_keeps_the_program() {
        let program = BpfProgram::accept_all()
            .dropping_outgoing()
            .expect("5 instructions");
        let code: Vec<(u16, u32, u8, u8)> = program
            .instructions()
            .iter()
            .map(|i| (i.code, i.k, i.jt, i.jf))
            .collect();
        assert_eq!(
            code,
            [
                (0x20, 0xffff_f004, 0, 0),
                (0x15, 4, 0, 1),
                (BPF_RET_K, 0, 0, 0),
                (0x00, 0, 0, 0),
                (BPF_RET_K, u32::MAX, 0, 0),
            ]
        );
        let longest = BpfProgram::new(vec![BpfInstruction::statement(BPF_RET_K, 0); 4093])
            .expect("4093 instructions");
        assert!(longest.dropping_outgoing().is_err(), "4097 instructions");
    }

    #[test]
    fn program_length_is_checked() {
        assert!(matches!(
            BpfProgram::new(vec![]),
            Err(BpfError::BadLength { len: 0 })
        ));
        let long = vec![BpfInstruction::statement(BPF_RET_K, 0); 4097];
        assert!(matches!(
            BpfProgram::new(long),
            Err(BpfError::BadLength { len: 4097 })
        ));
        assert_eq!(BpfProgram::accept_all().instructions()[0].k, u32::MAX);
    }

    #[test]
    fn fprog_points_at_the_instructions() {
        let program = [
            BpfInstruction::jump(0x15, 7, 1, 2),
            BpfInstruction::statement(BPF_RET_K, 3),
        ];
        let fprog = as_fprog(&program).expect("two instructions");
        assert_eq!(fprog.len, 2);
        assert_eq!(
            fprog.filter.cast_const().cast::<BpfInstruction>(),
            program.as_ptr()
        );
    }

    #[test]
    fn attach_detach_and_lock_on_a_unix_socket() {
        // Socket filters work on any socket, so this needs no privileges.
        let (a, _b) = nix::sys::socket::socketpair(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::Datagram,
            None,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        )
        .expect("socketpair");
        use std::os::fd::AsFd;
        attach_filter(a.as_fd(), &BpfProgram::reject_all()).expect("attach");
        detach_filter(a.as_fd()).expect("detach");
        assert!(matches!(
            detach_filter(a.as_fd()),
            Err(BpfError::SetOption {
                errno: Errno::ENOENT,
                ..
            })
        ));
        attach_filter(a.as_fd(), &BpfProgram::accept_all()).expect("attach");
        lock_filter(a.as_fd()).expect("lock");
        assert!(matches!(
            attach_filter(a.as_fd(), &BpfProgram::reject_all()),
            Err(BpfError::SetOption {
                errno: Errno::EPERM,
                ..
            })
        ));
        // The verifier refuses a program that does not end in a return.
        let bad = BpfProgram::new(vec![BpfInstruction::statement(0x00, 0)]).expect("length ok");
        let (c, _d) = nix::sys::socket::socketpair(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::Datagram,
            None,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        )
        .expect("socketpair");
        assert!(matches!(
            attach_filter(c.as_fd(), &bad),
            Err(BpfError::SetOption {
                errno: Errno::EINVAL,
                ..
            })
        ));
    }
}
