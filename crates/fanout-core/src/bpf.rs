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
