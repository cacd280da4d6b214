//! SIGINT (Ctrl-C) and SIGTERM (`timeout`, Slurm, Docker, Kubernetes) during training: the first
//! asks the training loop to stop at the next step boundary, where it saves a checkpoint, and
//! `zoo` then exits 130 (SIGINT) or 143 (SIGTERM), as a process killed by the signal would, so
//! `train && next` does not carry on. A second signal, or one while no training loop is
//! running, has the default effect: the process ends at once.
//!
//! The CLI owns the process's signals; the libraries install no handlers (they only read
//! `zoo_core::train::interrupt_requested`).
use std::sync::atomic::{AtomicI32, Ordering};

/// The signal that asked for a stop, 0 for none.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    // Only async-signal-safe calls here: atomics, signal(), raise().
    if zoo_core::train::loop_is_listening() && RECEIVED.swap(sig, Ordering::SeqCst) == 0 {
        zoo_core::train::request_interrupt();
        return;
    }
    // SAFETY: restores the default action and re-raises; it is delivered when this handler
    // returns (the signal is blocked while its handler runs) and ends the process.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// Installs the handlers for SIGINT and SIGTERM; called once, at start.
pub fn install() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a plain sigaction with a handler that only uses async-signal-safe calls.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            // Restart interrupted reads and writes: the loop notices the request between steps.
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// The exit code for a run stopped by a signal: 128 + the signal's number (130 for SIGINT,
/// 143 for SIGTERM), or None when no signal asked for a stop.
pub fn exit_code() -> Option<u8> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        sig => u8::try_from(128 + sig).ok(),
    }
}
