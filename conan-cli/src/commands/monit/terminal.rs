//! The terminal while `conan monit` runs: raw mode and the alternate screen, undone by a
//! guard on every way out — a normal return, an error, a quitting signal (the event loop
//! returns, the guard drops) and a panic. A panic hook restores the terminal first, so the
//! message lands on the normal screen, and then ends the process (exit 101): a panic in a
//! background task would otherwise leave the view drawing on a restored terminal.

use std::io::{self, Stdout, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use crossterm::terminal::{self, EnterAlternateScreen, LeaveAlternateScreen};
use crossterm::{cursor, execute};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;

/// Whether the terminal is in `conan monit`'s mode now (one process, one terminal).
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Raw mode + alternate screen + hidden cursor while it lives.
pub struct TerminalGuard {
    /// The ratatui terminal over stdout.
    pub terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl TerminalGuard {
    /// Takes over the terminal and installs the panic hook that gives it back.
    ///
    /// # Errors
    /// When stdout is not a terminal that raw mode works on.
    pub fn enter() -> io::Result<Self> {
        install_panic_hook();
        terminal::enable_raw_mode()?;
        ACTIVE.store(true, Ordering::SeqCst);
        let mut stdout = io::stdout();
        if let Err(e) = execute!(stdout, EnterAlternateScreen, cursor::Hide) {
            restore();
            return Err(e);
        }
        match Terminal::new(CrosstermBackend::new(stdout)) {
            Ok(terminal) => Ok(Self { terminal }),
            Err(e) => {
                restore();
                Err(e)
            }
        }
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
    }
}

/// Gives the terminal back: cursor shown, normal screen, cooked mode. Idempotent, and
/// safe to call from a panic hook (it only writes a few bytes and makes one `tcsetattr`).
/// Answers whether it was taken over.
pub fn restore() -> bool {
    let active = ACTIVE.swap(false, Ordering::SeqCst);
    if active {
        let mut stdout = io::stdout();
        let _ = execute!(stdout, cursor::Show, LeaveAlternateScreen);
        let _ = terminal::disable_raw_mode();
        let _ = stdout.flush();
    }
    active
}

fn install_panic_hook() {
    static INSTALLED: AtomicBool = AtomicBool::new(false);
    if INSTALLED.swap(true, Ordering::SeqCst) {
        return;
    }
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let active = restore();
        previous(info);
        if active {
            std::process::exit(101);
        }
    }));
}
